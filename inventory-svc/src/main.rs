use clap::Parser;
use inventory_svc::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = orderflow_runtime::telemetry::init(&config.telemetry, "inventory-svc")?;
    let listener = orderflow_runtime::grpc::bind(&config.listen).await?;
    let shutdown = orderflow_runtime::shutdown::on_signal();
    inventory_svc::run(config, listener, shutdown).await?;
    Ok(())
}
