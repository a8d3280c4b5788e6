use clap::Parser;
use order_api::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(checked) = config.check.only("order-api", || config.validate()) {
        return Ok(checked?);
    }
    let _telemetry = orderflow_runtime::telemetry::init(&config.telemetry, "order-api")?;
    let listener = orderflow_runtime::bind(&config.listen).await?;
    let shutdown = orderflow_runtime::shutdown::on_signal();
    order_api::run(config, listener, shutdown).await?;
    Ok(())
}
