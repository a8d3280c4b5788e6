//! notify-svc: turns order events into user notifications and serves them. It consumes every
//! order topic in its own consumer group through the shared consume loop (`ingest`: one
//! PostgreSQL statement per batch stores the batch's notifications, deduplicated by event id,
//! and announces them); a background task delivers them through the log or a signed webhook
//! with retries (`delivery`); `ListNotifications` pages through a user's notifications and
//! `SubscribeNotifications` streams new ones from one `LISTEN` connection per process (`feed`).
//! See docs/notifications.md.

mod args;
mod delivery;
mod error;
mod event;
mod feed;
mod ingest;
mod live;
mod money;
mod service;
mod sink;
mod store;
mod text;
mod webhook;

pub mod signature;

use std::sync::Arc;

use orderflow_grpc::Services;
use orderflow_kafka::consume::{self, Subscription};
use orderflow_kafka::{ConsumerArgs, KafkaArgs};
use orderflow_proto::notify::v1::notification_service_server::NotificationServiceServer;
use orderflow_runtime::config::ProcessArgs;
use orderflow_runtime::RuntimeError;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use args::DeliveryArgs;
pub use webhook::{NOTIFICATION_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The notify schema (`migrations/`): the notifications, notify-svc's alone.
pub static SCHEMA: orderflow_runtime::postgres::Schema = orderflow_runtime::postgres::Schema {
    name: "notify",
    migrator: &MIGRATOR,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, clap::Parser, serde::Serialize)]
#[command(name = "notify-svc", version, about = "orderflow notification service")]
pub struct Config {
    /// gRPC listen address.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    pub listen: String,

    /// HTTP listen address of the Prometheus metrics (`GET /metrics`).
    #[arg(
        long,
        env = "ORDERFLOW_METRICS_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    pub metrics_listen: String,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// Kafka consumer group; every replica of notify-svc uses the same one.
    #[arg(
        long,
        env = "ORDERFLOW_NOTIFY_GROUP_ID",
        default_value = "orderflow-notify-svc"
    )]
    pub group_id: String,

    #[command(flatten)]
    pub delivery: DeliveryArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

impl Config {
    /// Everything a start refuses before it connects to anything (`--check-config`; `run`
    /// begins with it).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.process.validate(&self.listen, &self.metrics_listen)?;
        self.delivery.plan()?;
        orderflow_kafka::client::check(&self.kafka, &self.group_id)
    }
}

/// Who may call what once authentication is on: buyers (`orders`) list and follow their own
/// notifications (ownership is checked per call); the consumer status is for operators.
fn policy() -> orderflow_grpc::auth::Policy {
    const BUYERS: &[&str] = &[orderflow_grpc::auth::SCOPE_ORDERS];
    orderflow_grpc::auth::Policy::default().service(
        orderflow_proto::notify::v1::notification_service_server::SERVICE_NAME,
        &[
            ("ListNotifications", BUYERS),
            ("SubscribeNotifications", BUYERS),
        ],
    )
}

/// Consumes order events, delivers notifications and serves the notification service on
/// `listener` until `shutdown` is cancelled (or one of them fails: then all stop and the error
/// is returned). Returns once the server drained, the consumer committed and left its group and
/// the background tasks stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    config.validate()?;
    // A bad webhook URL or a missing secret stopped the start above, not each delivery.
    let plan = config.delivery.plan()?;
    let Some(opened) = orderflow_runtime::process::open_pool(
        "notify-svc",
        &config.process,
        &crate::SCHEMA,
        &config.metrics_listen,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let pool = opened.pool.clone();
    let store = store::Store::new(pool.clone());
    let feed = feed::Feed::new(store.clone());
    let wake = Arc::new(Notify::new());

    // Stops everything when `shutdown` is cancelled or any part fails.
    let stop = shutdown.child_token();
    // Stops the background tasks once the server and the consumer stopped.
    let background_stop = CancellationToken::new();
    let background = [
        tokio::spawn(
            delivery::Delivery {
                pool,
                sink: sink::Sink::new(&plan.target),
                retries: plan.retries,
                interval: plan.interval,
                wake: Arc::clone(&wake),
            }
            .run(background_stop.clone()),
        ),
        tokio::spawn(feed.clone().run(background_stop.clone())),
    ];

    let subscription = Subscription {
        kafka: config.kafka.clone(),
        group_id: config.group_id.clone(),
        topics: orderflow_proto::topics::ALL,
        consumer: config.consumer.clone(),
        drain_timeout: std::time::Duration::from_millis(config.process.serving.drain_timeout_ms),
    };
    let status = subscription.status();
    let ingest = ingest::Ingest {
        store: store.clone(),
        delivery: Arc::clone(&wake),
    };
    let consuming = async {
        let consumed = consume::run(subscription, ingest, status.clone(), stop.clone()).await;
        if let Err(error) = &consumed {
            tracing::error!(%error, "the consume loop failed; stopping notify-svc");
        }
        stop.cancel();
        consumed
    };
    let api = service::NotificationApi {
        store,
        feed,
        shutdown: stop.clone(),
        streams: orderflow_grpc::streams::OpenStreams::new(config.process.serving.max_open_streams),
    };
    let serving = async {
        let served = orderflow_grpc::serve(
            Services::new(NotificationServiceServer::new(api))
                .and(status.service())
                .policy(policy()),
            listener,
            &config.process.serving,
            stop.clone().cancelled_owned(),
        )
        .await;
        stop.cancel();
        served
    };
    let (served, consumed) = tokio::join!(serving, consuming);

    background_stop.cancel();
    for task in background {
        if let Err(error) = task.await {
            tracing::error!(%error, "a notify-svc background task failed");
        }
    }
    served?;
    consumed
}
