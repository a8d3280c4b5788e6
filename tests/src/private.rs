//! Dependencies of a test's own, on free loopback ports, for tests that kill or stop them: the
//! shared ones are never disturbed. `PrivateBroker` is tansu with its own sqlite file;
//! `PrivateRedis` is a `redis-server` without persistence; `PrivateRedisCluster` is three;
//! `PrivatePostgres` is a throwaway cluster made with `initdb` and run with `pg_ctl`.

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
        self.index_storage().await;
    }

    /// Adds the indexes tansu's sqlite storage lacks (`scripts/index-broker-storage.py`), without
    /// which a broker slows as it fills. tansu creates its tables as it starts, so the script
    /// waits for them; on a restart the indexes are already there.
    async fn index_storage(&self) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/index-broker-storage.py"
        );
        let storage = self.dir.join("tansu.db");
        let output = Command::new("python3")
            .arg(script)
            .arg(&storage)
            .args(["--wait", "30"])
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run python3 {script}: {error}"));
        assert!(
            output.status.success(),
            "indexing the private broker's storage {}: {}",
            storage.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills the broker (SIGKILL, like a crash) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().await.expect("killing the private broker");
        }
    }

    /// Freezes the broker (SIGSTOP): its connections stay open and nothing answers, as with a
    /// broker host that hangs or a network that drops packets. Dropping it kills it anyway.
    pub async fn freeze(&mut self) {
        let pid = self
            .process
            .as_ref()
            .and_then(Child::id)
            .expect("the private broker is running");
        let stopped = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .await
            .expect("running kill");
        assert!(stopped.success(), "kill -STOP {pid} failed");
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
        let child = redis_server(port, &[], &std::env::temp_dir());
        Self::listening(format!("redis://127.0.0.1:{port}"), port, child).await
    }

    /// A Redis that speaks only TLS, with `pki`'s server certificate (`rediss://` URL).
    pub async fn start_tls(pki: &crate::pki::Pki) -> Self {
        let port = free_port();
        let (cert, key, ca) = (
            pki.path("server.pem"),
            pki.path("server-key.pem"),
            pki.path("ca.pem"),
        );
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
            ])
            .args([
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
            ])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server with TLS: {error}"));
        Self::listening(format!("rediss://127.0.0.1:{port}"), port, child).await
    }

    async fn listening(url: String, port: u16, child: Child) -> Self {
        let redis = Self {
            url,
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

/// A 3-master Redis Cluster on loopback ports, without persistence, made with
/// `redis-server --cluster-enabled yes` and `redis-cli --cluster create`.
pub struct PrivateRedisCluster {
    /// The seed nodes, comma separated, as `--redis-url` takes them with `--redis-cluster`.
    pub seeds: String,
    dir: std::path::PathBuf,
    _nodes: Vec<Child>,
}

impl PrivateRedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("orderflow-cluster-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let config = format!("nodes-{port}.conf");
                let cluster = ["--cluster-enabled", "yes", "--cluster-config-file", &config];
                redis_server(*port, &cluster, &dir)
            })
            .collect();
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for address in &addresses {
            crate::eventually(
                "a cluster node to listen",
                Duration::from_secs(15),
                || async { tokio::net::TcpStream::connect(address).await.ok() },
            )
            .await;
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &ports {
            crate::eventually(
                "the cluster to report state ok",
                Duration::from_secs(30),
                || async {
                    let info = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "cluster", "info"])
                        .output()
                        .await
                        .ok()?;
                    String::from_utf8_lossy(&info.stdout)
                        .contains("cluster_state:ok")
                        .then_some(())
                },
            )
            .await;
        }
        Self {
            seeds: addresses
                .iter()
                .map(|address| format!("redis://{address}"))
                .collect::<Vec<_>>()
                .join(","),
            dir,
            _nodes: nodes,
        }
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A PostgreSQL cluster of its own (`initdb`, `pg_ctl`) on a free loopback port, trust
/// authentication, for tests that stop PostgreSQL. Run as the `postgres` user when the tests
/// run as root (PostgreSQL refuses to run as root).
pub struct PrivatePostgres {
    /// The server's URL, without a database.
    pub url: String,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivatePostgres {
    async fn initialised() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("orderflow-pg-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir).expect("creating the private PostgreSQL's directory");
        let postgres = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}"),
            port,
            dir,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", &postgres.dir.display().to_string()])
                .status()
                .await
                .expect("running chown");
            assert!(
                status.success(),
                "could not hand the data directory to postgres"
            );
        }
        postgres
            .pg_tool(
                "initdb",
                &["-D", "data", "-U", "postgres", "--auth=trust", "--no-sync"],
            )
            .await;
        postgres
    }

    pub async fn start() -> Self {
        let postgres = Self::initialised().await;
        postgres.restart().await;
        postgres
    }

    /// A server that also speaks TLS with `pki`'s server certificate (`sslmode=verify-full`
    /// works against `pki`'s CA).
    pub async fn start_tls(pki: &crate::pki::Pki) -> Self {
        let postgres = Self::initialised().await;
        let data = postgres.dir.join("data");
        for (from, to) in [
            ("server.pem", "server.crt"),
            ("server-key.pem", "server.key"),
        ] {
            std::fs::copy(pki.path(from), data.join(to)).expect("copying the server's TLS files");
        }
        // PostgreSQL reads its key only if nobody else can, and only as its owner.
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("restricting the server key");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", "server.crt", "server.key"])
                .current_dir(&data)
                .status()
                .await
                .expect("running chown");
            assert!(status.success(), "could not hand the TLS files to postgres");
        }
        std::fs::write(
            data.join("postgresql.auto.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .expect("turning TLS on");
        postgres.restart().await;
        postgres
    }

    /// Starts the server (again) on the same port and data.
    pub async fn restart(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        self.pg_tool(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "postgres.log",
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub async fn stop(&self) {
        self.pg_tool("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"])
            .await;
    }

    async fn pg_tool(&self, tool: &str, args: &[&str]) {
        let binary = postgres_binary(tool);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {binary}: {error}; install PostgreSQL with \
                     `scripts/ensure-postgres.sh` (or run `make test`)"
                )
            });
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let binary = postgres_binary("pg_ctl");
        let data = self.dir.join("data");
        let mut command = if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            std::process::Command::new(&binary)
        };
        let _ = command
            .args(["-D", &data.display().to_string(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

/// A PostgreSQL server program (`initdb`, `pg_ctl`): from `ORDERFLOW_PG_BIN` if set, else the
/// newest Debian installation under `/usr/lib/postgresql`.
fn postgres_binary(tool: &str) -> String {
    if let Ok(dir) = std::env::var("ORDERFLOW_PG_BIN") {
        return format!("{dir}/{tool}");
    }
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|dir| dir.join("bin").join(tool).display().to_string())
        .unwrap_or_else(|| tool.to_owned())
}

/// A `redis-server` on loopback `port` that keeps nothing on disk, started in `dir`.
fn redis_server(port: u16, extra_args: &[&str], dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra_args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start redis-server: {error}; install it with \
                 `scripts/ensure-redis.sh` (or run `make test`)"
            )
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free loopback port")
}
