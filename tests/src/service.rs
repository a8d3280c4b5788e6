//! The services as the tests start them: each from its typed `Config` (the value its binary
//! parses from flags and environment), either in-process as a task on the test's runtime or as
//! the built binary in a child process that is handed the same value as flags. One [`Launcher`]
//! does both, so a test chooses how a service runs without saying its settings twice.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use orderflow_kafka::args::KafkaArgs;
use orderflow_runtime::config::ProcessArgs;
use orderflow_runtime::RuntimeError;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::process::ServiceProcess;

/// A service the harness can start: its configuration type and how it runs.
pub trait Service: clap::Parser + serde::Serialize + Clone + Send + 'static {
    /// Its binary, `target/<profile>/<BINARY>`.
    const BINARY: &'static str;
    /// The gRPC service whose health says the server is up.
    const HEALTH: &'static str;
    /// Serves until `shutdown` is cancelled: the binary's work without its `main`.
    fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), RuntimeError>>;
    fn listen(&mut self) -> &mut String;
    fn metrics_listen(&mut self) -> &mut String;
    fn process(&mut self) -> &mut ProcessArgs;
    fn kafka(&mut self) -> &mut KafkaArgs;
}

/// The gRPC service every consumer-worker serves (with health).
pub const CONSUMER_STATUS: &str = "orderflow.consumer.v1.ConsumerStatusService";
pub const ORDER_SERVICE: &str = "orderflow.order.v1.OrderService";
pub const INVENTORY_SERVICE: &str = "orderflow.inventory.v1.InventoryService";
pub const NOTIFY_SERVICE: &str = "orderflow.notify.v1.NotificationService";

macro_rules! service {
    ($config:ty, $binary:literal, $health:expr, $run:path) => {
        impl Service for $config {
            const BINARY: &'static str = $binary;
            const HEALTH: &'static str = $health;
            fn run(
                self,
                listener: TcpListener,
                shutdown: CancellationToken,
            ) -> BoxFuture<'static, Result<(), RuntimeError>> {
                Box::pin($run(self, listener, shutdown))
            }
            fn listen(&mut self) -> &mut String {
                &mut self.listen
            }
            fn metrics_listen(&mut self) -> &mut String {
                &mut self.metrics_listen
            }
            fn process(&mut self) -> &mut ProcessArgs {
                &mut self.process
            }
            fn kafka(&mut self) -> &mut KafkaArgs {
                &mut self.kafka
            }
        }
    };
}

service!(
    order_api::Config,
    "order-api",
    ORDER_SERVICE,
    order_api::run
);
service!(
    inventory_svc::Config,
    "inventory-svc",
    INVENTORY_SERVICE,
    inventory_svc::run
);
service!(
    notify_svc::Config,
    "notify-svc",
    NOTIFY_SERVICE,
    notify_svc::run
);
service!(
    consumer_worker::Config,
    "consumer-worker",
    CONSUMER_STATUS,
    consumer_worker::run
);

/// What `S`'s binary would run with given no flag: every default (and any `ORDERFLOW_*`
/// variable of the test's environment, as the binary would read it).
pub fn defaults<S: Service>() -> S {
    S::parse_from([S::BINARY])
}

/// The flags that make `S`'s binary parse exactly `config`: one `--flag=value` per setting that
/// has a value (each element of a list setting once; a switch only when on). Every field must
/// be a flag and every flag a field, or the test fails: a setting the child could not be given
/// would make it run with another configuration than the test's.
pub fn flags<S: Service>(config: &S) -> Vec<String> {
    let mut values = serde_json::Map::new();
    let serialized = serde_json::to_value(config)
        .unwrap_or_else(|error| panic!("{} configuration as data: {error}", S::BINARY));
    flatten(serialized, &mut values);
    let command = S::command();
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        if !switch && !arg.get_action().takes_values() {
            // --help, --version
            continue;
        }
        let id = arg.get_id().as_str();
        let value = values
            .remove(id)
            .unwrap_or_else(|| panic!("{} flag --{long} has no configuration field", S::BINARY));
        match value {
            Value::Null => {}
            Value::Bool(on) if switch => {
                if on {
                    flags.push(format!("--{long}"));
                }
            }
            Value::Array(items) => {
                flags.extend(
                    items
                        .into_iter()
                        .map(|item| format!("--{long}={}", text(item))),
                );
            }
            other => flags.push(format!("--{long}={}", text(other))),
        }
    }
    assert!(
        values.is_empty(),
        "{} configuration fields without a flag: {:?}",
        S::BINARY,
        values.keys().collect::<Vec<_>>()
    );
    flags
}

/// The fields of `value` and of every group flattened into it, by name (clap's argument ids).
fn flatten(value: Value, into: &mut serde_json::Map<String, Value>) {
    let Value::Object(fields) = value else {
        panic!("a configuration serializes as an object, not {value}");
    };
    for (name, field) in fields {
        if field.is_object() {
            flatten(field, into);
        } else {
            into.insert(name, field);
        }
    }
}

fn text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// A change a test makes to one service's configuration after the harness isolated it (its
/// database, Redis prefix, topics, ports). Default: none.
pub struct Configure<C>(Arc<dyn Fn(&mut C) + Send + Sync>);

impl<C> Configure<C> {
    pub fn new(change: impl Fn(&mut C) + Send + Sync + 'static) -> Self {
        Self(Arc::new(change))
    }

    /// This change, then `change`.
    #[must_use]
    pub fn then(self, change: impl Fn(&mut C) + Send + Sync + 'static) -> Self
    where
        C: 'static,
    {
        Self::new(move |config| {
            (self.0)(config);
            change(config);
        })
    }

    pub fn apply(&self, config: &mut C) {
        (self.0)(config);
    }
}

impl<C> Default for Configure<C> {
    fn default() -> Self {
        Self(Arc::new(|_| {}))
    }
}

impl<C> Clone for Configure<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<C> fmt::Debug for Configure<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Configure(..)")
    }
}

/// How a [`Launcher`] runs its services.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A task on the test's runtime each: fast to start, and the test sees their logs.
    InProcess,
    /// The built binary each, with this environment added: for what only a whole process does
    /// (dies by a signal, exports its traces, exits).
    Processes(Vec<(String, String)>),
}

/// Starts services from their configurations, each on a free loopback port, and stops them.
pub struct Launcher {
    mode: Mode,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), RuntimeError>>>,
    processes: Vec<ServiceProcess>,
}

impl Launcher {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            processes: Vec::new(),
        }
    }

    /// Starts a service with `config` (its listen address replaced by a free port's) and
    /// returns that address. A process is serving when this returns; a task is listening, and
    /// [`Launcher::wait_serving`] tells when it serves.
    pub async fn start<S: Service>(&mut self, mut config: S) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let address = listener.local_addr().expect("local address");
        *config.listen() = address.to_string();
        match &self.mode {
            Mode::InProcess => self
                .tasks
                .push(tokio::spawn(config.run(listener, self.shutdown.clone()))),
            Mode::Processes(env) => {
                drop(listener);
                let process = ServiceProcess::start(config, env).await;
                self.processes.push(process);
            }
        }
        address
    }

    /// Waits (up to 60 s) until `service` at `address` reports SERVING over `channel`, failing
    /// at once if a service of this launcher has died.
    pub async fn wait_serving(
        &mut self,
        channel: tonic::transport::Channel,
        address: SocketAddr,
        service: &str,
    ) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        loop {
            self.fail_if_a_service_died().await;
            if crate::stack::serving(&mut health, service).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} at {address} did not become SERVING within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn fail_if_a_service_died(&mut self) {
        if let Some(index) = self.tasks.iter().position(JoinHandle::is_finished) {
            let outcome = self.tasks.remove(index).await;
            panic!("a service stopped during start-up: {outcome:?}");
        }
        assert!(
            !self.processes.iter_mut().any(ServiceProcess::has_exited),
            "a service process exited during start-up; run with ORDERFLOW_TEST_LOG=warn to see why"
        );
    }

    /// The processes of `binary`, in the order they started.
    pub fn processes(&mut self, binary: &str) -> impl Iterator<Item = &mut ServiceProcess> {
        let binary = binary.to_owned();
        self.processes
            .iter_mut()
            .filter(move |process| process.name() == binary)
    }

    /// The first process of `binary`, taken out: the test stops it itself.
    pub fn take_process(&mut self, binary: &str) -> ServiceProcess {
        let index = self
            .processes
            .iter()
            .position(|process| process.name() == binary)
            .unwrap_or_else(|| panic!("no {binary} process here"));
        self.processes.remove(index)
    }

    /// SIGTERM to every process and shutdown to every task, as Kubernetes stops pods; waits
    /// until each returned, failing the test unless each did cleanly.
    pub async fn stop(mut self) {
        for process in std::mem::take(&mut self.processes) {
            assert!(
                process.terminate().await,
                "a service exited uncleanly on SIGTERM"
            );
        }
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), task)
                .await
                .expect("a service did not stop within 30 s of shutdown");
            outcome
                .expect("a service task panicked")
                .expect("a service stopped with an error");
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with values no default has, handed over as flags, parses back to itself.
    fn round_trip<S: Service>(change: impl Fn(&mut S)) {
        let mut config = defaults::<S>();
        change(&mut config);
        let parsed = S::parse_from(std::iter::once(S::BINARY.to_owned()).chain(flags(&config)));
        assert_eq!(
            serde_json::to_value(&parsed).expect("as data"),
            serde_json::to_value(&config).expect("as data"),
            "{}",
            S::BINARY
        );
    }

    #[test]
    fn each_service_configuration_survives_the_trip_through_flags() {
        round_trip::<order_api::Config>(|config| {
            config.listen = "127.0.0.1:1".into();
            config.rate_limit_per_second = 2.5;
            config.redis.redis_cluster = true;
            config.redis.redis_url_file = Some("/run/redis-url".into());
            config.kafka.kafka_properties = vec!["linger.ms=1".into(), "acks=all".into()];
            config.process.postgres.migrate_only = true;
            config.process.telemetry.log_format = orderflow_telemetry::LogFormat::Json;
            config.process.serving.auth.environment = orderflow_grpc::auth::Environment::Production;
            config.test_fault = Some("after-ack:crash".into());
        });
        round_trip::<inventory_svc::Config>(|config| {
            config.orphan_grace_ms = 7;
            config.process.serving.tls.tls_cert_file = Some("/tls/cert.pem".into());
            config.process.serving.tls.tls_key_file = Some("/tls/key.pem".into());
        });
        round_trip::<notify_svc::Config>(|config| {
            config.delivery.webhook_url = "http://127.0.0.1:1/hook".into();
            config.delivery.webhook_secret = "s".into();
            config.consumer.batch_max_messages = 1;
        });
        round_trip::<consumer_worker::Config>(|config| {
            config.group_id = "g".into();
            config.inventory.inventory_ca_file = Some("/tls/ca.pem".into());
        });
    }
}
