//! notify-svc's own settings: how notifications are delivered (log or webhook, retries), as a
//! clap group with a flag, an environment variable and a default each. Checked once at start-up
//! ([`DeliveryArgs::plan`]) so a bad URL or a missing secret stops the process with a clear
//! message instead of failing every delivery later. The webhook secret is never logged: its
//! environment value is hidden from `--help` and `Debug` redacts it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use hyper::Uri;
use orderflow_runtime::RuntimeError;

use crate::delivery::Retries;
use crate::sink::Target;

#[derive(Clone, clap::Args, serde::Serialize)]
pub struct DeliveryArgs {
    /// Webhook every notification is POSTed to (`http://` only for now). Empty: notifications
    /// are delivered to the log instead.
    #[arg(long, env = "ORDERFLOW_NOTIFY_WEBHOOK_URL", default_value = "")]
    pub webhook_url: String,

    /// Shared secret of the webhook's HMAC-SHA256 signature (never logged). Required with
    /// --webhook-url, unless --webhook-secret-file is given.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_WEBHOOK_SECRET",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub webhook_secret: String,

    /// File holding the webhook secret (one trailing newline is ignored), instead of
    /// --webhook-secret.
    #[arg(long, env = "ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE", default_value = "")]
    pub webhook_secret_file: String,

    /// Longest wait for one webhook attempt (connect, send, answer); past it the attempt failed.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_WEBHOOK_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub webhook_timeout_ms: u64,

    /// Attempts per notification before it is marked `failed` (with its last error).
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub webhook_max_attempts: u32,

    /// Pause after the first failed attempt; it doubles after each further failure.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_WEBHOOK_MIN_BACKOFF_MS",
        default_value_t = 500
    )]
    pub webhook_min_backoff_ms: u64,

    /// Longest pause between two attempts of one notification.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_WEBHOOK_MAX_BACKOFF_MS",
        default_value_t = 30_000
    )]
    pub webhook_max_backoff_ms: u64,

    /// How often each notify-svc process looks for notifications due for delivery (a stored
    /// batch also wakes it at once).
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_DELIVERY_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub delivery_interval_ms: u64,
}

impl fmt::Debug for DeliveryArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.webhook_secret.is_empty() {
            ""
        } else {
            "***"
        };
        f.debug_struct("DeliveryArgs")
            .field(
                "webhook_url",
                &orderflow_config::redact_url(&self.webhook_url),
            )
            .field("webhook_secret", &secret)
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_min_backoff_ms", &self.webhook_min_backoff_ms)
            .field("webhook_max_backoff_ms", &self.webhook_max_backoff_ms)
            .field("delivery_interval_ms", &self.delivery_interval_ms)
            .finish()
    }
}

/// The delivery settings, checked.
#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub retries: Retries,
    pub interval: Duration,
}

impl DeliveryArgs {
    /// Checks the settings and reads the secret file.
    pub fn plan(&self) -> Result<Plan, RuntimeError> {
        let config = |message: String| RuntimeError::Config(message);
        if self.webhook_max_attempts == 0 {
            return Err(config("--webhook-max-attempts must be at least 1".into()));
        }
        if self.webhook_timeout_ms == 0 {
            return Err(config("--webhook-timeout-ms must be at least 1".into()));
        }
        let retries = Retries {
            max_attempts: self.webhook_max_attempts,
            min_backoff: Duration::from_millis(self.webhook_min_backoff_ms.max(1)),
            max_backoff: Duration::from_millis(
                self.webhook_max_backoff_ms
                    .max(self.webhook_min_backoff_ms)
                    .max(1),
            ),
        };
        let interval = Duration::from_millis(self.delivery_interval_ms.max(1));
        let has_secret_file = !self.webhook_secret_file.is_empty();
        if self.webhook_url.is_empty() {
            return Ok(Plan {
                target: Target::Log,
                retries,
                interval,
            });
        }
        let url = webhook_url(&self.webhook_url).map_err(config)?;
        let secret = match (self.webhook_secret.is_empty(), has_secret_file) {
            (false, true) => return Err(config(
                "give the webhook secret once: --webhook-secret or --webhook-secret-file, not both"
                    .into(),
            )),
            (false, false) => self.webhook_secret.clone().into_bytes(),
            (true, true) => read_secret(Path::new(&self.webhook_secret_file)).map_err(config)?,
            (true, false) => {
                return Err(config(
                    "--webhook-url needs a signing secret: set --webhook-secret \
                     (ORDERFLOW_NOTIFY_WEBHOOK_SECRET) or --webhook-secret-file"
                        .into(),
                ))
            }
        };
        Ok(Plan {
            target: Target::Webhook {
                url,
                secret,
                timeout: Duration::from_millis(self.webhook_timeout_ms),
            },
            retries,
            interval,
        })
    }
}

/// An `http://host[:port]/path` URL; `https://` is refused until TLS support arrives.
fn webhook_url(text: &str) -> Result<Uri, String> {
    let url: Uri = text
        .parse()
        .map_err(|error| format!("--webhook-url {text:?} is not a URL: {error}"))?;
    match url.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "--webhook-url {text:?}: https:// is not supported yet (it arrives with TLS \
                 support); use an http:// URL, e.g. through a local TLS-terminating proxy"
            ))
        }
        _ => {
            return Err(format!(
                "--webhook-url {text:?} must be an http:// URL, e.g. http://127.0.0.1:8080/hook"
            ))
        }
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("--webhook-url {text:?} has no host"));
    }
    Ok(url)
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret = std::fs::read(path).map_err(|error| {
        format!(
            "reading the webhook secret from --webhook-secret-file {}: {error}",
            path.display()
        )
    })?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(format!("--webhook-secret-file {} is empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        delivery: DeliveryArgs,
    }

    fn args(flags: &[&str]) -> DeliveryArgs {
        Cli::parse_from(std::iter::once("notify-svc").chain(flags.iter().copied())).delivery
    }

    fn refusal(flags: &[&str]) -> String {
        args(flags).plan().unwrap_err().to_string()
    }

    #[test]
    fn the_log_is_the_default() {
        let plan = args(&[]).plan().unwrap();
        assert!(matches!(plan.target, Target::Log));
        assert_eq!(plan.retries.max_attempts, 5);
        assert_eq!(plan.interval, Duration::from_secs(1));
    }

    #[test]
    fn a_webhook_needs_http_and_a_secret() {
        let plan = args(&[
            "--webhook-url=http://127.0.0.1:9/hook",
            "--webhook-secret=s",
        ])
        .plan()
        .unwrap();
        let Target::Webhook { url, secret, .. } = plan.target else {
            panic!("a webhook");
        };
        assert_eq!(url.to_string(), "http://127.0.0.1:9/hook");
        assert_eq!(secret, b"s");
        assert!(refusal(&[
            "--webhook-url=https://example.com/hook",
            "--webhook-secret=s"
        ])
        .contains("https:// is not supported yet"));
        assert!(
            refusal(&["--webhook-url=ftp://example.com/", "--webhook-secret=s"])
                .contains("must be an http:// URL")
        );
        assert!(
            refusal(&["--webhook-url=not a url", "--webhook-secret=s"]).contains("is not a URL")
        );
        assert!(
            refusal(&["--webhook-url=http://127.0.0.1:9/hook"]).contains("needs a signing secret")
        );
        assert!(refusal(&["--webhook-max-attempts=0"]).contains("--webhook-max-attempts"));
    }

    #[test]
    fn the_secret_may_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("notify-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, "from-file\n").unwrap();
        let file = format!("--webhook-secret-file={}", path.display());
        let plan = args(&["--webhook-url=http://127.0.0.1:9/", &file])
            .plan()
            .unwrap();
        let Target::Webhook { secret, .. } = plan.target else {
            panic!("a webhook");
        };
        assert_eq!(secret, b"from-file");
        assert!(refusal(&[
            "--webhook-url=http://127.0.0.1:9/",
            &file,
            "--webhook-secret=s"
        ])
        .contains("not both"));
        std::fs::remove_file(&path).unwrap();
        assert!(refusal(&["--webhook-url=http://127.0.0.1:9/", &file])
            .contains("reading the webhook secret"));
    }

    #[test]
    fn the_secret_never_shows() {
        let args = args(&[
            "--webhook-url=http://127.0.0.1:9/",
            "--webhook-secret=hunter2",
        ]);
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(!format!("{:?}", args.plan().unwrap()).contains("hunter2"));
    }
}
