//! The inventory-svc binary: parses its configuration (flags and environment), then checks it
//! (`--check-config`) or runs the service until SIGINT/SIGTERM.

use clap::Parser;
use inventory_svc::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let Some(started) =
        orderflow_runtime::process::start("inventory-svc", &config.process, &config.listen, || {
            config.validate()
        })
        .await?
    else {
        return Ok(());
    };
    inventory_svc::run(config, started.listener, started.shutdown).await?;
    Ok(())
}
