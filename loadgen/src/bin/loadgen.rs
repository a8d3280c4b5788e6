//! loadgen: load a running orderflow, report rate and latency, verify the invariants
//! (docs/loadgen.md). The code lives in the `orderflow_loadgen` library (loadgen/src/lib.rs).

fn main() -> std::process::ExitCode {
    orderflow_loadgen::main()
}
