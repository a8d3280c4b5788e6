//! Compiles the contracts with `protox` (pure Rust), so a fresh machine needs no `protoc`.

use prost::Message;

const PROTOS: &[&str] = &[
    "orderflow/order/v1/order.proto",
    "orderflow/inventory/v1/inventory.proto",
    "orderflow/notify/v1/notify.proto",
    "orderflow/events/v1/events.proto",
    "orderflow/consumer/v1/consumer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=orderflow");
    let descriptors = protox::compile(PROTOS, ["."])?;

    // Server reflection serves this set, so grpcurl works without the .proto files.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("orderflow_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
