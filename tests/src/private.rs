//! Dependencies of a test's own, on free loopback ports, for tests that kill or stop them: the
//! shared ones are never disturbed. `PrivateBroker` is tansu with its own sqlite file;
//! `PrivateRedis` is a `redis-server` without persistence.

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

pub struct PrivateRedis {
    pub url: String,
    port: u16,
    process: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start redis-server: {error}; install it with \
                     `scripts/ensure-redis.sh` (or run `make test`)"
                )
            });
        let redis = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            process: Some(child),
        };
        crate::eventually(
            "the private Redis to listen",
            Duration::from_secs(15),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
                    .await
                    .ok()
            },
        )
        .await;
        redis
    }

    /// Kills Redis (SIGKILL): it is gone, with everything it held.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().await.expect("killing the private Redis");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free loopback port")
}
