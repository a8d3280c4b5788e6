//! inventory-svc: owns the stock of every SKU and hands out reservations for orders.
//!
//! Redis holds the live counters and admits or refuses a reservation in one atomic Lua script
//! (`counters`); PostgreSQL holds the SKU catalog (`catalog`). The reservation rules are plain
//! Rust (`stock`), and `service` is the gRPC edge that maps every error to a status in one place.

mod catalog;
mod counters;
mod error;
mod service;
mod stock;

use orderflow_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use orderflow_runtime::config::{PostgresArgs, RedisArgs, TelemetryArgs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::InventoryError;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory-svc", version, about = "orderflow inventory service")]
pub struct Config {
    /// gRPC listen address.
    #[arg(
        long,
        env = "ORDERFLOW_INVENTORY_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: String,

    #[command(flatten)]
    pub postgres: PostgresArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Serves the inventory service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), orderflow_runtime::RuntimeError> {
    let pool = orderflow_runtime::postgres::connect_and_migrate(&config.postgres).await?;
    let redis = orderflow_runtime::redis::connect(&config.redis).await?;
    let inventory = service::Inventory::new(
        catalog::Catalog::new(pool),
        counters::Counters::new(redis, config.redis.clone()),
    );
    orderflow_runtime::grpc::serve(
        InventoryServiceServer::new(inventory),
        listener,
        shutdown.cancelled_owned(),
    )
    .await
}
