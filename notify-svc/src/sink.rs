//! Where a notification is delivered: the log (the default: one INFO line each) or a webhook.
//! A sink answers per notification whether it took it; the delivery task does the bookkeeping
//! (retries, giving up) the same way for both.

use std::fmt;
use std::time::Duration;

use hyper::Uri;

use crate::store::Stored;
use crate::webhook::Webhook;

/// Where notifications go, checked.
pub enum Target {
    Log,
    Webhook {
        url: Uri,
        secret: Vec<u8>,
        timeout: Duration,
    },
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Log => f.write_str("Log"),
            Self::Webhook { url, timeout, .. } => f
                .debug_struct("Webhook")
                .field("url", &orderflow_config::redact_url(&url.to_string()))
                .field("secret", &"***")
                .field("timeout", timeout)
                .finish(),
        }
    }
}

pub enum Sink {
    Log,
    Webhook(Box<Webhook>),
}

impl Sink {
    pub fn new(target: &Target) -> Self {
        match target {
            Target::Log => Self::Log,
            Target::Webhook {
                url,
                secret,
                timeout,
            } => Self::Webhook(Box::new(Webhook::new(
                url.clone(),
                secret.clone(),
                *timeout,
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook(_) => "webhook",
        }
    }

    /// Delivers one notification; `Err` says why it was not taken (worth another attempt).
    pub async fn deliver(&self, notification: &Stored) -> Result<(), String> {
        match self {
            Self::Log => {
                tracing::info!(
                    notification_id = %notification.notification_id,
                    user_id = %notification.user_id,
                    event_type = %notification.event_type,
                    text = %notification.text,
                    "notification"
                );
                Ok(())
            }
            Self::Webhook(webhook) => webhook.deliver(notification).await,
        }
    }
}
