//! Test fixture: a real `nats-server -js` (or, on request, one without
//! JetStream) per test, on its own port and
//! store dir, killed and deleted on drop. Also used by the benches.
#![allow(dead_code)]

pub mod logs;

use std::io::Read;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Finds `nats-server`: `NATS_SERVER_BIN`, then `PATH`, then the Debian
/// location.
pub fn nats_server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .chain(["/usr/sbin/nats-server", "/usr/local/bin/nats-server"].map(PathBuf::from))
        .find(|p| p.is_file())
}

/// `None` (after printing a visible skip line) when there is no
/// `nats-server`; panics instead when `A3S_REQUIRE_NATS=1`.
pub fn require_bin(test: &str) -> Option<PathBuf> {
    match nats_server_bin() {
        Some(bin) => Some(bin),
        None => {
            if std::env::var("A3S_REQUIRE_NATS").as_deref() == Ok("1") {
                panic!(
                    "{test}: nats-server not found (NATS_SERVER_BIN, PATH) and A3S_REQUIRE_NATS=1"
                );
            }
            // straight to stderr: libtest captures `eprintln!` of passing
            // tests, which would hide the skip
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: nats-server not found (set NATS_SERVER_BIN or put it on PATH)"
            );
            None
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A running `nats-server` with JetStream.
pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    port: u16,
    extra: String,
    /// Whether the config enables JetStream.
    jetstream: bool,
    /// Extra lines inside the `jetstream {}` block (server-wide limits).
    jetstream_extra: String,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream and a 64 KiB `max_payload`; `None`
    /// when the binary is missing (see [`require_bin`]).
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, "")
    }

    /// Like [`start`](Self::start), with extra config-file lines
    /// (authorization blocks and the like).
    pub fn start_with(test: &str, extra: &str) -> Option<Self> {
        Self::start_configured(test, extra, true)
    }

    /// Like [`start`](Self::start), with extra lines inside the
    /// `jetstream {}` block (`max_file_store: 1MB` and the like).
    pub fn start_with_jetstream(test: &str, jetstream_extra: &str) -> Option<Self> {
        let mut server = Self::prepare(test, "", true)?;
        server.jetstream_extra = jetstream_extra.to_string();
        server.launch();
        Some(server)
    }

    /// A server started without JetStream (no `jetstream {}` block, as
    /// `nats-server` without `-js`).
    pub fn start_without_jetstream(test: &str) -> Option<Self> {
        Self::start_configured(test, "", false)
    }

    fn start_configured(test: &str, extra: &str, jetstream: bool) -> Option<Self> {
        let mut server = Self::prepare(test, extra, jetstream)?;
        server.launch();
        Some(server)
    }

    /// A server not started yet, in a directory of its own.
    fn prepare(test: &str, extra: &str, jetstream: bool) -> Option<Self> {
        let bin = require_bin(test)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "a3s-nats-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("create server dir");
        Some(Self {
            bin,
            conf: dir.join("server.conf"),
            log: dir.join("server.log"),
            dir,
            port: 0,
            extra: extra.to_string(),
            jetstream,
            jetstream_extra: String::new(),
            child: None,
        })
    }

    fn write_conf(&self) {
        let listen = if self.port == 0 {
            "127.0.0.1:-1".to_string()
        } else {
            format!("127.0.0.1:{}", self.port)
        };
        let jetstream = if self.jetstream {
            format!(
                "jetstream {{\n  store_dir: {:?}\n  {}\n}}\n",
                self.dir.join("js").display().to_string(),
                self.jetstream_extra
            )
        } else {
            String::new()
        };
        let conf = format!(
            "listen: {listen}\nmax_payload: 65536\n{jetstream}{extra}\n",
            extra = self.extra,
        );
        std::fs::write(&self.conf, conf).expect("write server config");
    }

    fn launch(&mut self) {
        for attempt in 0..20 {
            self.write_conf();
            let _ = std::fs::remove_file(&self.log);
            let child = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.conf)
                .arg("-l")
                .arg(&self.log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server");
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(15)) {
                Ok(port) => {
                    self.port = port;
                    return;
                }
                Err(reason) => {
                    self.kill();
                    // the port of a restart can be taken meanwhile: retry
                    eprintln!("nats-server start attempt {attempt} failed: {reason}");
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        panic!("nats-server did not start; log: {}", read(&self.log));
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<u16, String> {
        let started = Instant::now();
        loop {
            let log = read(&self.log);
            if log.contains("Server is ready") {
                let port = log
                    .lines()
                    .find_map(|l| {
                        l.split("Listening for client connections on ")
                            .nth(1)
                            .and_then(|addr| addr.trim().rsplit(':').next())
                            .and_then(|p| p.parse::<u16>().ok())
                    })
                    .ok_or_else(|| format!("no client port in log: {log}"))?;
                return Ok(port);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("exited with {status}: {log}"));
            }
            if started.elapsed() > limit {
                return Err(format!("not ready after {limit:?}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory (config, log, JetStream store).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, and wait for the process to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful shutdown, as a rolling upgrade does), and wait
    /// for the process to exit.
    pub fn terminate(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Replaces the extra config-file lines used from the next
    /// [`restart`](Self::restart) on (later lines override earlier ones).
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_string();
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
        // `kill` returns once the signal is sent; the server's threads stop
        // a moment later (later still on a loaded machine), and until then
        // it answers: wait until every thread is stopped
        let pid = self.pid().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "server {pid} did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a [`pause`](Self::pause)d server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("server running").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills the server (SIGKILL) and starts it again on the same port
    /// with an empty JetStream store: every stream and consumer is gone, as
    /// after a lost disk or a server moved to a fresh volume.
    pub fn restart_with_empty_store(&mut self) {
        self.kill();
        let store = self.dir.join("js");
        if store.exists() {
            std::fs::remove_dir_all(&store).expect("remove the JetStream store");
        }
        self.launch();
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        read(&self.log)
    }
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may
/// take it meanwhile, as with any port picked ahead).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("pick a free port")
}

/// A three-node JetStream cluster of real `nats-server`s, each with its own
/// random client port and store; nodes are `n1`..`n3` (`server_name`).
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three nodes; `None` when the binary is missing.
    pub fn start(test: &str) -> Option<Self> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut nodes = Vec::new();
        for (i, port) in routes.iter().enumerate() {
            let others: Vec<String> = routes
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let extra = format!(
                "server_name: n{}\ncluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{port}\n  \
                 routes: [{}]\n}}\n",
                i + 1,
                others.join(", ")
            );
            let mut server = NatsServer::prepare(test, &extra, true)?;
            server.launch();
            nodes.push(server);
        }
        Some(Self { nodes })
    }

    /// The node named `name` (`n1`..`n3`).
    pub fn node(&mut self, name: &str) -> &mut NatsServer {
        let i: usize = name.trim_start_matches('n').parse().expect("node name nN");
        &mut self.nodes[i - 1]
    }

    /// Every node's client URL, comma-separated (a client's server list).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A unique stream name / subject prefix pair.
pub fn unique(tag: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let short = &id[..12];
    (
        format!("T_{}_{short}", tag.to_uppercase()),
        format!("{tag}{short}"),
    )
}

/// A provider on `server` with a unique stream and prefix ([`config`]).
pub async fn provider(server: &NatsServer, tag: &str) -> event_nats::NatsProvider {
    event_nats::NatsProvider::connect(config(server, tag))
        .await
        .expect("connect")
}

/// A config for `server` with a unique stream and prefix.
pub fn config(server: &NatsServer, tag: &str) -> event_nats::NatsConfig {
    let (stream_name, subject_prefix) = unique(tag);
    event_nats::NatsConfig {
        url: server.url(),
        stream_name,
        subject_prefix,
        max_events: 0,
        max_age_secs: 0,
        connect_timeout_secs: 5,
        request_timeout_secs: 5,
        ..event_nats::NatsConfig::default()
    }
}

/// Event number `n` of the tests, published under `{prefix}.{category}.x`
/// with the number in its payload (`{"n": n}`).
pub fn numbered_event(p: &event_nats::NatsProvider, category: &str, n: u64) -> event_core::Event {
    use event_core::EventProvider as _;
    event_core::Event::new(
        p.build_subject(category, "x"),
        category,
        format!("e{n}"),
        "test",
        serde_json::json!({ "n": n }),
    )
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/{pid}/task/*/stat`). Where `/proc` cannot tell, true: there is
/// nothing to wait on.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            // the thread ended meanwhile
            return true;
        };
        // "pid (comm) S ...": the state follows the last ')'
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t")
    })
}
