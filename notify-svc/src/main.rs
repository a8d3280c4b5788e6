//! The notify-svc binary: parses its configuration (flags and environment), starts telemetry and
//! runs the service until SIGINT/SIGTERM.

use clap::Parser;
use notify_svc::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(checked) = config.check.only("notify-svc", || config.validate()) {
        return Ok(checked?);
    }
    let _telemetry = orderflow_runtime::telemetry::init(&config.telemetry, "notify-svc")?;
    let listener = orderflow_runtime::bind(&config.listen).await?;
    let shutdown = orderflow_runtime::shutdown::on_signal();
    notify_svc::run(config, listener, shutdown).await?;
    Ok(())
}
