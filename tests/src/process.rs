//! An orderflow service as a real child process (its built binary), for tests that must kill
//! it, stop it with a signal, or look at what only a whole process does (its telemetry).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::service::Service;

/// The built binary `name` next to the running test binary (`target/<profile>/deps/…`) or tool
/// (`target/<profile>/loadgen`): `target/<profile>/<name>`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let running = std::env::current_exe().expect("the running binary's path");
    let parent = running
        .parent()
        .expect("the running binary lives in target/<profile>");
    let profile_dir = if parent.ends_with("deps") {
        parent.parent().unwrap_or(parent)
    } else {
        parent
    };
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
    /// How it was started, to start it again.
    flags: Vec<String>,
    env: Vec<(String, String)>,
    service: String,
}

impl ServiceProcess {
    /// Starts `config`'s binary with `config` as its flags (its log filter replaced by
    /// `ORDERFLOW_TEST_LOG`, default `error`) and `env` added to its environment; returns once
    /// it reports SERVING at `config`'s listen address, failing the test if it exits first.
    pub async fn start<S: Service>(mut config: S, env: &[(String, String)]) -> Self {
        let address: SocketAddr = config.listen().parse().unwrap_or_else(|error| {
            panic!(
                "{} listen address {:?}: {error}",
                S::BINARY,
                config.listen()
            )
        });
        config.process().telemetry.log =
            std::env::var("ORDERFLOW_TEST_LOG").unwrap_or_else(|_| "error".into());
        let flags = crate::service::flags(&config);
        Self {
            child: spawn(S::BINARY, &flags, env, address, S::HEALTH).await,
            name: S::BINARY.to_owned(),
            address,
            flags,
            env: env.to_vec(),
            service: S::HEALTH.to_owned(),
        }
    }

    /// Starts it again as it was started (same flags, same address), after it ended or was
    /// killed; returns once it serves.
    pub async fn restart(&mut self) {
        if !self.has_exited() {
            self.kill().await;
        }
        self.child = spawn(
            &self.name,
            &self.flags,
            &self.env,
            self.address,
            &self.service,
        )
        .await;
    }

    /// Whether the process has exited (crashed) by now.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to end by itself (a crash it was made to have), failing the test
    /// after `timeout`.
    pub async fn wait_for_exit(&mut self, timeout: Duration) {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still runs after {timeout:?}", self.name))
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.name));
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

/// Starts binary `name` with `flags` and `env` (see [`ServiceProcess::start`]) and waits until
/// it serves `service` at `address`.
async fn spawn(
    name: &str,
    flags: &[String],
    env: &[(String, String)],
    address: SocketAddr,
    service: &str,
) -> Child {
    let binary = workspace_binary(name);
    let mut child = Command::new(&binary)
        .args(flags)
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
    child
}
