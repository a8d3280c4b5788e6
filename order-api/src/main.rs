//! The order-api binary: parses its configuration (flags and environment), then checks it
//! (`--check-config`) or runs the service until SIGINT/SIGTERM.

use clap::Parser;
use order_api::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let Some(started) =
        orderflow_runtime::process::start("order-api", &config.process, &config.listen, || {
            config.validate()
        })
        .await?
    else {
        return Ok(());
    };
    order_api::run(config, started.listener, started.shutdown).await?;
    Ok(())
}
