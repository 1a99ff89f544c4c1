//! A Waybill installation made of the real binaries, as child processes, on a fresh database and
//! a unique queue prefix: one ingress and N workers, each of which can be killed and restarted.
//!
//! The binaries are the ones `cargo build --bins` put beside this test binary's directory
//! (`target/debug/waybill-ingress`, `target/debug/waybill-worker`), or those in
//! `WAYBILL_E2E_BIN_DIR` when it is set; `scripts/test.sh` builds them before it runs this suite.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use waybill_bench::scratch::{self, terminate, topology};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_store::testing::TestDatabase;

/// The secrets the stack's sources use (they must never appear in a log).
pub const SECRETS: [(&str, &str, &str); 5] = [
    ("starshipit", "starshipit", "faults-starshipit-secret-5f1c"),
    ("clickpost", "clickpost", "faults-clickpost-key-77a0"),
    ("aftership", "aftership", "faults-aftership-secret-1b9e"),
    ("easypost", "easypost", "faults-easypost-secret-c3d4"),
    ("direct", "waybill", "faults-direct-secret-9e21"),
];

pub use crate::env::{admin_database_url, amqp_url};

/// Where `cargo build` put the workspace's binaries: the profile directory above this test
/// binary's `deps/`, unless `WAYBILL_E2E_BIN_DIR` names another directory.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WAYBILL_E2E_BIN_DIR").filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.join("waybill-ingress").is_file() && dir.join("waybill-worker").is_file() {
            return Ok(dir);
        }
        bail!(
            "WAYBILL_E2E_BIN_DIR={} holds no waybill-ingress and waybill-worker",
            dir.display()
        );
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1) {
        if dir.join("waybill-ingress").is_file() && dir.join("waybill-worker").is_file() {
            return Ok(dir.to_owned());
        }
    }
    bail!(
        "waybill-ingress and waybill-worker are not built beside {}: run `cargo build --bins` first \
         (scripts/test.sh does)",
        exe.display()
    )
}

/// One installation.
pub struct Stack {
    /// Configuration file, logs.
    pub dir: PathBuf,
    pub settings: Settings,
    pub db: Option<TestDatabase>,
    pub ingress_addr: SocketAddr,
    pub worker_addrs: Vec<SocketAddr>,
    ingress: Option<Child>,
    workers: Vec<Option<Child>>,
    bins: PathBuf,
    log_level: String,
    spawned: usize,
    /// Extra environment of the ingress (e.g. an `AMQP_URL` through a relay).
    ingress_env: Vec<(&'static str, String)>,
    /// Extra environment of every process (e.g. where to export traces).
    env: Vec<(&'static str, String)>,
}

impl Stack {
    /// A fresh database, prefix, topology and configuration; no process started yet.
    /// `label` names the log directory.
    pub async fn create(label: &str, workers: usize, log_level: &str) -> anyhow::Result<Stack> {
        Stack::create_with(label, workers, log_level, "").await
    }

    /// Like [`Stack::create`], with `extra_toml` appended to the configuration (more sources).
    pub async fn create_with(
        label: &str,
        workers: usize,
        log_level: &str,
        extra_toml: &str,
    ) -> anyhow::Result<Stack> {
        Stack::create_on(label, workers, log_level, extra_toml, &[amqp_url()]).await
    }

    /// Like [`Stack::create_with`], on the broker nodes `amqp_urls` (`bus.urls` when there are
    /// several: the nodes of a cluster).
    pub async fn create_on(
        label: &str,
        workers: usize,
        log_level: &str,
        extra_toml: &str,
        amqp_urls: &[String],
    ) -> anyhow::Result<Stack> {
        let bins = bin_dir()?;
        let bus_urls = match amqp_urls {
            [] => bail!("no AMQP URL"),
            [url] => format!("url = {url:?}"),
            [first, ..] => format!("url = {first:?}\nurls = {amqp_urls:?}"),
        };
        let tag = format!("{:08x}", rand::random::<u32>());
        let dir = std::env::temp_dir().join(format!("waybill-faults-{tag}-{label}"));
        std::fs::create_dir_all(&dir)?;
        let db = TestDatabase::create(&admin_database_url())
            .await
            .context("creating the test database")?;
        let ingress_addr = free_port()?;
        let worker_addrs = (0..workers)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let mut toml = format!(
            r#"
[bus]
{bus_urls}
prefix = "faults{tag}."
delivery_limit = 10
publisher_channels = 2
[database]
url = "{db}"
max_connections = 4
[ingress]
addr = "{ingress_addr}"
body_limit_bytes = 262144
publish_timeout_ms = 2000
retry_after_secs = 1
shutdown_grace_ms = 5000
[worker]
addr = "127.0.0.1:0"
batch_size = 100
prefetch = 200
batch_linger_ms = 10
consumers = 1
shutdown_grace_ms = 5000
[log]
format = "json"
"#,
            db = db.url(),
        );
        for (id, profile, secret) in SECRETS {
            toml.push_str(&format!(
                "[[sources]]\nid = \"{id}\"\nprofile = \"{profile}\"\nsecrets = [\"{secret}\"]\nmode = \"webhook_only\"\n"
            ));
        }
        toml.push_str(extra_toml);
        std::fs::write(dir.join("waybill.toml"), &toml)?;
        let settings = Settings::from_toml_str(&toml)?;
        let connection = waybill_bus::BusConnection::connect(
            settings.bus.url.expose_secret(),
            "waybill-faults-setup",
        )
        .await?;
        topology(&settings).declare(&connection).await?;
        let _ = connection.close().await;
        Ok(Stack {
            dir,
            settings,
            db: Some(db),
            ingress_addr,
            worker_addrs,
            ingress: None,
            workers: (0..workers).map(|_| None).collect(),
            bins,
            log_level: log_level.to_owned(),
            spawned: 0,
            ingress_env: Vec::new(),
            env: Vec::new(),
        })
    }

    pub fn ingress_url(&self) -> String {
        format!("http://{}", self.ingress_addr)
    }

    pub fn worker_url(&self, index: usize) -> String {
        format!("http://{}", self.worker_addrs[index])
    }

    pub fn database_url(&self) -> String {
        self.settings.database.url.expose_secret().to_owned()
    }

    /// The stack's queues and exchanges.
    pub fn topology(&self) -> waybill_bus::Topology {
        topology(&self.settings)
    }

    pub fn webhooks_queue(&self) -> String {
        topology(&self.settings).webhooks_queue()
    }

    fn spawn(&mut self, binary: &str, extra_env: &[(&str, String)]) -> anyhow::Result<Child> {
        self.spawned += 1;
        let log_path = self.dir.join(format!("{binary}-{}.log", self.spawned));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(self.bins.join(binary));
        command
            .env("WAYBILL_CONFIG", self.dir.join("waybill.toml"))
            .env("RUST_LOG", &self.log_level)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env_remove("AMQP_URLS")
            .env_remove("WAYBILL_BUS_PREFIX")
            .env_remove("WAYBILL_INGRESS_ADDR")
            .env_remove("WAYBILL_WORKER_ADDR")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_TRACES_SAMPLER_ARG")
            .env_remove("OTEL_TRACES_FILTER")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (name, value) in self.env.iter().chain(extra_env) {
            command.env(name, value);
        }
        command
            .spawn()
            .with_context(|| format!("starting {binary}"))
    }

    /// Sets an environment variable for every (re)start of every process.
    pub fn set_env(&mut self, name: &'static str, value: String) {
        self.env.push((name, value));
    }

    /// Sets an environment variable for every (re)start of the ingress.
    pub fn set_ingress_env(&mut self, name: &'static str, value: String) {
        self.ingress_env.push((name, value));
    }

    /// Starts the ingress and waits until it is ready (broker connected).
    pub async fn start_ingress(&mut self) -> anyhow::Result<()> {
        let env = self.ingress_env.clone();
        let env: Vec<(&str, String)> = env.into_iter().collect();
        let child = self.spawn("waybill-ingress", &env)?;
        self.ingress = Some(child);
        wait_ready(
            &format!("{}/readyz", self.ingress_url()),
            Duration::from_secs(60),
        )
        .await
    }

    /// Starts worker `index` and waits until it is ready (database and broker).
    pub async fn start_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let addr = self.worker_addrs[index];
        let child = self.spawn(
            "waybill-worker",
            &[("WAYBILL_WORKER_ADDR", addr.to_string())],
        )?;
        self.workers[index] = Some(child);
        wait_ready(
            &format!("{}/readyz", self.worker_url(index)),
            Duration::from_secs(60),
        )
        .await
    }

    /// Starts everything.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        self.start_ingress().await?;
        for index in 0..self.workers.len() {
            self.start_worker(index).await?;
        }
        Ok(())
    }

    /// SIGKILL the ingress (no shutdown of any kind).
    pub async fn kill_ingress(&mut self) {
        if let Some(mut child) = self.ingress.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGKILL worker `index`.
    pub async fn kill_worker(&mut self, index: usize) {
        if let Some(mut child) = self.workers[index].take() {
            let _ = child.kill().await;
        }
    }

    /// True while the process has not exited.
    pub fn worker_alive(&mut self, index: usize) -> bool {
        self.workers[index]
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn ingress_alive(&mut self) -> bool {
        self.ingress
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops every process with SIGTERM (SIGKILL after a bound), deletes the queues, drops the
    /// database and removes the logs directory: the end of a test that passed (one that fails
    /// panics before it, and its logs stay for reading).
    pub async fn destroy(self) {
        let dir = self.destroy_keeping_logs().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// [`Stack::destroy`], keeping the logs directory and returning it: to read what the stopped
    /// processes wrote, or to point a failure at. The caller removes it when it is done.
    pub async fn destroy_keeping_logs(mut self) -> PathBuf {
        let dir = self.dir.clone();
        let mut children: Vec<Child> = self.ingress.take().into_iter().collect();
        children.extend(self.workers.iter_mut().filter_map(Option::take));
        for child in children {
            terminate(child).await;
        }
        scratch::remove(&self.settings, self.db.take(), "waybill-faults-cleanup").await;
        dir
    }

    /// Every line the processes wrote so far.
    pub fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default();
        paths.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        paths.sort();
        paths
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }
}

/// The `host:port` of an AMQP URL.
pub fn amqp_authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host),
    )
}

/// The broker's socket address (port 5672 unless the URL says otherwise).
pub fn amqp_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = amqp_authority(url).context("the AMQP URL has no host")?;
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5672")
    };
    let with_port = with_port.replace("localhost", "127.0.0.1");
    Ok(with_port.parse()?)
}

/// `url` with its host and port replaced by `addr`.
pub fn amqp_url_via(url: &str, addr: SocketAddr) -> String {
    match amqp_authority(url) {
        Some(authority) => url.replacen(authority, &addr.to_string(), 1),
        None => url.to_owned(),
    }
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until `url` answers 2xx.
pub async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    match crate::eventually_or(within, async || is_ready(&http, url).await).await {
        Some(()) => Ok(()),
        None => bail!("{url} did not become ready within {} s", within.as_secs()),
    }
}

/// Whether `url` answers 2xx now.
pub async fn is_ready(http: &reqwest::Client, url: &str) -> bool {
    matches!(http.get(url).send().await, Ok(response) if response.status().is_success())
}
