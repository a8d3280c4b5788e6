//! The consumer-worker binary: parses its configuration (flags and environment), then checks it
//! (`--check-config`) or runs the service until SIGINT/SIGTERM.

use clap::Parser;
use consumer_worker::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let Some(started) = orderflow_runtime::process::start(
        "consumer-worker",
        &config.process,
        &config.listen,
        || config.validate(),
    )
    .await?
    else {
        return Ok(());
    };
    consumer_worker::run(config, started.listener, started.shutdown).await?;
    Ok(())
}
