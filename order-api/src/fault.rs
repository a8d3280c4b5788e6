//! Faults a test injects into a placement at one instant, to prove what a crash or a stall
//! there leaves behind (tests/it/acknowledged.rs). Built only with the `test-faults` feature,
//! which the tests crate enables; without it every hook does nothing and the `--test-fault`
//! flag does not exist.
//!
//! A fault is `<point>:<action>`: point `before-publish` (the reservation is held, the event
//! not sent) or `after-ack` (the broker acknowledged the event, nothing else happened yet);
//! action `crash` (the process aborts, as a `kill -9` would end it) or `pause=<ms>` (the
//! placement stalls). It fires once, for the first placement that reaches its point.

#[derive(Clone, Debug, Default)]
pub struct Faults {
    #[cfg(feature = "test-faults")]
    plan: Option<std::sync::Arc<plan::Plan>>,
}

impl Faults {
    /// The fault `spec` describes (see the module comment); `None`: no fault.
    #[cfg(feature = "test-faults")]
    pub fn parse(spec: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            plan: spec
                .map(plan::Plan::parse)
                .transpose()?
                .map(std::sync::Arc::new),
        })
    }

    /// The reservation is held; the event is about to be sent.
    pub async fn before_publish(&self) {
        #[cfg(feature = "test-faults")]
        self.fire(plan::Point::BeforePublish).await;
    }

    /// The broker acknowledged the event; nothing else happened yet.
    pub async fn after_ack(&self) {
        #[cfg(feature = "test-faults")]
        self.fire(plan::Point::AfterAck).await;
    }

    #[cfg(feature = "test-faults")]
    async fn fire(&self, point: plan::Point) {
        if let Some(plan) = &self.plan {
            plan.fire(point).await;
        }
    }
}

#[cfg(feature = "test-faults")]
mod plan {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Point {
        BeforePublish,
        AfterAck,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Crash,
        Pause(Duration),
    }

    #[derive(Debug)]
    pub struct Plan {
        point: Point,
        action: Action,
        fired: AtomicBool,
    }

    impl Plan {
        pub fn parse(spec: &str) -> Result<Self, String> {
            let bad = || {
                format!(
                    "--test-fault {spec:?}: expected <before-publish|after-ack>:<crash|pause=MS>"
                )
            };
            let (point, action) = spec.split_once(':').ok_or_else(bad)?;
            let point = match point {
                "before-publish" => Point::BeforePublish,
                "after-ack" => Point::AfterAck,
                _ => return Err(bad()),
            };
            let action = match action.split_once('=') {
                None if action == "crash" => Action::Crash,
                Some(("pause", ms)) => {
                    Action::Pause(Duration::from_millis(ms.parse().map_err(|_| bad())?))
                }
                _ => return Err(bad()),
            };
            Ok(Self {
                point,
                action,
                fired: AtomicBool::new(false),
            })
        }

        pub async fn fire(&self, point: Point) {
            if point != self.point || self.fired.swap(true, Ordering::SeqCst) {
                return;
            }
            match self.action {
                Action::Crash => {
                    tracing::warn!(?point, "test fault: crashing");
                    std::process::abort();
                }
                Action::Pause(pause) => {
                    tracing::warn!(?point, ?pause, "test fault: pausing the placement");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_points_and_actions() {
            let plan = Plan::parse("after-ack:pause=1500").unwrap();
            assert_eq!(
                (plan.point, plan.action),
                (Point::AfterAck, Action::Pause(Duration::from_millis(1500)))
            );
            let plan = Plan::parse("before-publish:crash").unwrap();
            assert_eq!(
                (plan.point, plan.action),
                (Point::BeforePublish, Action::Crash)
            );
            for bad in [
                "after-ack",
                "later:crash",
                "after-ack:pause",
                "after-ack:stop",
            ] {
                assert!(Plan::parse(bad).is_err(), "{bad}");
            }
        }
    }
}
