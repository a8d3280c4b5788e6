//! A Kafka-protocol broker (tansu) of a test's own, on a free loopback port with its own sqlite
//! file, for tests that stop the broker: the shared one is never disturbed.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct PrivateBroker {
    pub address: String,
    dir: std::path::PathBuf,
    process: Option<Child>,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("orderflow-broker-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir).expect("creating the private broker's directory");
        let mut broker = Self {
            address: format!("127.0.0.1:{port}"),
            dir,
            process: None,
        };
        broker.restart().await;
        broker
    }

    /// Starts the broker again on the same port and storage.
    pub async fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "the private broker is already running"
        );
        let binary = crate::deps::tansu_binary();
        let url = format!("tcp://{}", self.address);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("opening the private broker's log");
        let child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start the broker {binary}: {error}; install it with \
                     `scripts/ensure-broker.sh` (or run `make test`)"
                )
            });
        self.process = Some(child);
        crate::eventually(
            "the private broker to listen",
            Duration::from_secs(30),
            || async { tokio::net::TcpStream::connect(&self.address).await.ok() },
        )
        .await;
    }

    /// Kills the broker (SIGKILL, like a crash) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().await.expect("killing the private broker");
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(child) = self.process.as_mut() {
            let _ = child.start_kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free loopback port")
}
