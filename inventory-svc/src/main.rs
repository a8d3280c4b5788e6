use clap::Parser;
use inventory_svc::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(checked) = config.check.only("inventory-svc", || config.validate()) {
        return Ok(checked?);
    }
    let _telemetry = orderflow_runtime::telemetry::init(&config.telemetry, "inventory-svc")?;
    let listener = orderflow_runtime::bind(&config.listen).await?;
    let shutdown = orderflow_runtime::shutdown::on_signal();
    inventory_svc::run(config, listener, shutdown).await?;
    Ok(())
}
