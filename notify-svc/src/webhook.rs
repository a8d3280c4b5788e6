//! The webhook sink: one signed JSON `POST` per notification over plain HTTP/1.1 (a pooled
//! hyper client; TLS arrives later). Any 2xx answer means delivered; anything else, a failed
//! connection or no answer within the timeout is a failed attempt, retried by the delivery task.
//! Receivers may see a notification more than once and deduplicate on
//! `X-Orderflow-Notification-Id`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::format_description::well_known::Rfc3339;

use crate::signature;
use crate::store::Stored;

pub const NOTIFICATION_ID_HEADER: &str = "x-orderflow-notification-id";
pub const TIMESTAMP_HEADER: &str = "x-orderflow-timestamp";
pub const SIGNATURE_HEADER: &str = "x-orderflow-signature";
/// Most bytes of an error answer's body kept in `last_delivery_error`.
const ERROR_BODY_LIMIT: usize = 200;

pub struct Webhook {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    /// The URL as errors and logs show it (credentials redacted).
    shown: String,
    secret: Vec<u8>,
    timeout: Duration,
}

impl Webhook {
    pub fn new(url: Uri, secret: Vec<u8>, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            shown: orderflow_config::redact_url(&url.to_string()),
            url,
            secret,
            timeout,
        }
    }

    pub async fn deliver(&self, notification: &Stored) -> Result<(), String> {
        let body = body(notification);
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let signature = signature::sign(&self.secret, &timestamp, &body);
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("orderflow-notify-svc"))
            .header(
                NOTIFICATION_ID_HEADER,
                notification.notification_id.to_string(),
            )
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| format!("building the request: {error}"))?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| format!("POST {}: {}", self.shown, describe(&error)))?;
            let status = response.status();
            // Read to the end, so the connection can be reused.
            let answer = response
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            // Kept in PostgreSQL text (no NUL) and shown in logs: control characters go.
            let body: String =
                String::from_utf8_lossy(&answer[..answer.len().min(ERROR_BODY_LIMIT)])
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
            let body = body.trim();
            Err(if body.is_empty() {
                format!("POST {} answered HTTP {status}", self.shown)
            } else {
                format!("POST {} answered HTTP {status}: {body}", self.shown)
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "POST {} did not answer within {} ms",
                    self.shown,
                    self.timeout.as_millis()
                ))
            })
    }
}

/// The JSON body: the notification's fields, `created_at` in RFC 3339.
pub fn body(notification: &Stored) -> Vec<u8> {
    let created_at = notification.created_at.format(&Rfc3339).unwrap_or_default();
    serde_json::json!({
        "notification_id": notification.notification_id.to_string(),
        "user_id": notification.user_id,
        "order_id": notification.order_id.to_string(),
        "event_id": notification.event_id.to_string(),
        "event_type": notification.event_type,
        "text": notification.text,
        "created_at": created_at,
    })
    .to_string()
    .into_bytes()
}

/// The client error with its causes (hyper's own message is terse: "client error (Connect)").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_body_is_json_with_every_field() {
        let notification = Stored {
            notification_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            user_id: "alice".into(),
            order_id: Uuid::now_v7(),
            event_type: "order-paid".into(),
            text: "Order \"x\" paid: 2 items, ¥199.00".into(),
            created_at: time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_500_000_000)
                .unwrap(),
        };
        let body: serde_json::Value = serde_json::from_slice(&body(&notification)).unwrap();
        assert_eq!(
            body["notification_id"],
            notification.notification_id.to_string()
        );
        assert_eq!(body["user_id"], "alice");
        assert_eq!(body["order_id"], notification.order_id.to_string());
        assert_eq!(body["event_id"], notification.event_id.to_string());
        assert_eq!(body["event_type"], "order-paid");
        assert_eq!(body["text"], "Order \"x\" paid: 2 items, ¥199.00");
        assert_eq!(body["created_at"], "2023-11-14T22:13:20.5Z");
    }
}
