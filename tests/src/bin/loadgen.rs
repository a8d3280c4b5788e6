//! loadgen: load a running orderflow, report rate and latency, verify the invariants
//! (docs/loadgen.md). The code lives in `orderflow_tests::loadgen`.

fn main() -> std::process::ExitCode {
    orderflow_tests::loadgen::main()
}
