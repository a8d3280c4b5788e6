use clap::Parser;
use consumer_worker::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(checked) = config.check.only("consumer-worker", || config.validate()) {
        return Ok(checked?);
    }
    let _telemetry = orderflow_runtime::telemetry::init(&config.telemetry, "consumer-worker")?;
    let listener = orderflow_runtime::bind(&config.listen).await?;
    let shutdown = orderflow_runtime::shutdown::on_signal();
    consumer_worker::run(config, listener, shutdown).await?;
    Ok(())
}
