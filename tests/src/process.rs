//! An orderflow service as a real child process (its built binary), for tests that must kill
//! it, stop it with a signal, or look at what only a whole process does (its telemetry).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The built binary `name` next to the running test binary (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built; build it with `cargo build --bins` (make test does)",
        binary.display()
    );
    binary
}

pub struct ServiceProcess {
    child: Child,
    name: String,
    pub address: SocketAddr,
}

impl ServiceProcess {
    /// Starts binary `name` serving gRPC on `address` with `args` (any `--log=` among them is
    /// replaced by `ORDERFLOW_TEST_LOG`, default `error`) and `env`; returns once `service`
    /// reports SERVING there, failing the test if the process exits first.
    pub async fn start(
        name: &str,
        args: &[String],
        env: &[(String, String)],
        address: SocketAddr,
        service: &str,
    ) -> Self {
        let binary = workspace_binary(name);
        let log = std::env::var("ORDERFLOW_TEST_LOG").unwrap_or_else(|_| "error".into());
        let mut child = Command::new(&binary)
            .args(args.iter().filter(|arg| !arg.starts_with("--log=")))
            .arg(format!("--listen={address}"))
            .arg(format!("--log={log}"))
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
        let serving_address = address.to_string();
        tokio::select! {
            _ = crate::stack::wait_serving(&serving_address, service) => {}
            status = child.wait() => panic!(
                "{name} exited during start-up ({status:?}); run with ORDERFLOW_TEST_LOG=warn \
                 to see why"
            ),
        }
        Self {
            child,
            name: name.to_owned(),
            address,
        }
    }

    /// Whether the process has exited (crashed) by now.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, like a crash: nothing is committed or closed cleanly.
    pub async fn kill(&mut self) {
        self.child
            .kill()
            .await
            .unwrap_or_else(|error| panic!("killing {}: {error}", self.name));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends SIGTERM (once the process is still running), without waiting.
    pub async fn send_terminate(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// SIGTERM, then waits at most `limit` for the exit, failing the test past it; returns how
    /// long the exit took and whether it was clean.
    pub async fn terminate_within(mut self, limit: Duration) -> (Duration, bool) {
        let sent = tokio::time::Instant::now();
        self.send_terminate().await;
        let exit = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still runs {limit:?} after SIGTERM", self.name))
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.name));
        (sent.elapsed(), exit.success())
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit and returns whether it was clean.
    pub async fn terminate(mut self) -> bool {
        self.send_terminate().await;
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 30 s of SIGTERM", self.name))
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.name));
        exit.success()
    }
}
