//! Test support: real NATS servers with JetStream, standalone or as a
//! three-node cluster, listening on loopback only, so market tests can run
//! over the same broker the market uses in production and then inspect what
//! the broker stored on disk.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a standalone server gets to report JetStream healthy.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a cluster gets to route and elect a JetStream meta leader; a
/// leader lost to a kill takes several seconds to be replaced.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(50);

/// Free ports are found by binding and releasing them, so another process
/// can take one before the server binds it; a new set of ports is tried.
const START_ATTEMPTS: usize = 5;

/// One `nats-server` process and the folder holding its config, log and
/// JetStream store. The process is killed on drop.
pub struct NatsServer {
    name: String,
    dir: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

/// Why a server did not become ready.
enum NotReady {
    /// It exited, most likely because one of its ports was taken meanwhile.
    Exited(String),
    TimedOut(String),
}

impl NatsServer {
    /// Starts a standalone server with JetStream in `dir` and waits until
    /// JetStream is up.
    pub fn start(dir: &Path) -> NatsServer {
        NatsServer::start_standalone(dir, true)
    }

    /// Starts a standalone server without JetStream (what a plain
    /// `nats-server` runs) and waits until it takes clients.
    pub fn start_without_jetstream(dir: &Path) -> NatsServer {
        NatsServer::start_standalone(dir, false)
    }

    fn start_standalone(dir: &Path, jetstream: bool) -> NatsServer {
        fs::create_dir_all(dir).expect("creating the NATS server folder");
        let ready: &dyn Fn(&NatsServer) -> bool = if jetstream {
            &NatsServer::standalone_ready
        } else {
            &|s: &NatsServer| s.answers_as_itself() && s.healthy()
        };
        for attempt in 1..=START_ATTEMPTS {
            let [port, monitor_port] = free_ports::<2>();
            let mut server =
                NatsServer::configure(dir, "cmm-test", port, monitor_port, None, jetstream);
            server.spawn();
            match server.wait_ready(Instant::now() + START_TIMEOUT, ready) {
                Ok(()) => return server,
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => server.kill(),
                Err(NotReady::Exited(why) | NotReady::TimedOut(why)) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Writes the config; `cluster` is the cluster port and the other
    /// members' cluster ports.
    fn configure(
        dir: &Path,
        name: &str,
        port: u16,
        monitor_port: u16,
        cluster: Option<(u16, &[u16])>,
        jetstream: bool,
    ) -> NatsServer {
        let server = NatsServer {
            name: name.to_owned(),
            dir: dir.to_owned(),
            port,
            monitor_port,
            child: None,
        };
        let mut config = format!(
            "server_name: {name:?}\n\
             listen: \"127.0.0.1:{port}\"\n\
             http: \"127.0.0.1:{monitor_port}\"\n"
        );
        if jetstream {
            config.push_str(&format!(
                "jetstream {{\n  store_dir: {:?}\n}}\n",
                path_str(&server.store_dir())
            ));
        }
        if let Some((cluster_port, peers)) = cluster {
            // The config parser wants commas between array items.
            let routes: Vec<String> = peers
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            config.push_str(&format!(
                "cluster {{\n  name: \"cmm-test\"\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        fs::write(server.config_path(), config).expect("writing the NATS config");
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        // Appending keeps the log of every run of a restarted server.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the NATS log");
        let err = log.try_clone().expect("cloning the NATS log handle");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| match e.kind() {
                ErrorKind::NotFound => {
                    panic!("nats-server is not installed: apt-get install nats-server")
                }
                _ => panic!("spawning nats-server: {e}"),
            });
        self.child = Some(child);
    }

    /// Polls until `ready` holds, the process exits, or `deadline` passes.
    fn wait_ready(
        &mut self,
        deadline: Instant,
        ready: &dyn Fn(&NatsServer) -> bool,
    ) -> Result<(), NotReady> {
        loop {
            let child = self.child.as_mut().expect("the server was spawned");
            if let Some(status) = child.try_wait().expect("polling nats-server") {
                self.child = None;
                return Err(NotReady::Exited(format!(
                    "{} exited ({status}) before it was ready; log:\n{}",
                    self.name,
                    self.log_tail()
                )));
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut(format!(
                    "{} was not ready in time; log:\n{}",
                    self.name,
                    self.log_tail()
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Whether the process answering the monitoring port is this server: a
    /// released port may have gone to another test's server.
    fn answers_as_itself(&self) -> bool {
        self.get_json("/varz")
            .is_some_and(|varz| varz["port"] == self.port && varz["server_name"] == self.name)
    }

    fn standalone_ready(&self) -> bool {
        self.answers_as_itself()
            && self.get("/healthz?js-enabled-only=true").map(|r| r.0) == Some(200)
            && self.jetstream_enabled()
    }

    fn cluster_ready(&self, size: usize) -> bool {
        // Plain /healthz also fails while this server's JetStream is not
        // current with the meta leader; a leader may be elected before
        // every peer is known, so the peer count is checked too.
        self.answers_as_itself()
            && self.healthy()
            && self.get_json("/jsz").is_some_and(|jsz| {
                let meta = &jsz["meta_cluster"];
                meta["leader"].as_str().is_some_and(|l| !l.is_empty())
                    && meta["cluster_size"].as_u64() >= Some(size as u64)
            })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured `store_dir`; the server keeps its data under its
    /// `jetstream/` subfolder.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("polling nats-server").is_none(),
            None => false,
        }
    }

    /// SIGKILL, so nothing is flushed or handed over on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; reaping it is what matters.
            let _ = child.kill();
            child.wait().expect("reaping nats-server");
        }
    }

    /// Starts the server again with the same config, ports and store, and
    /// waits until it is healthy. A running server is killed first.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Err(NotReady::Exited(why) | NotReady::TimedOut(why)) = self.wait_ready(
            Instant::now() + START_TIMEOUT,
            &NatsServer::standalone_ready,
        ) {
            panic!("restarting: {why}");
        }
    }

    /// A monitoring endpoint's status code and body, or `None` when the
    /// server does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.monitor_port, path)
    }

    /// A monitoring endpoint's body as JSON, when it answers 200.
    pub fn get_json(&self, path: &str) -> Option<Value> {
        match self.get(path)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Whether `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.get("/healthz").map(|r| r.0) == Some(200)
    }

    /// Whether `/jsz` reports JetStream on; a 2.9 server's `/healthz` says
    /// ok even with JetStream off.
    pub fn jetstream_enabled(&self) -> bool {
        self.get_json("/jsz")
            .is_some_and(|jsz| jsz["disabled"] != true && jsz["config"]["store_dir"].is_string())
    }

    /// The JetStream meta leader's name as this server sees it.
    pub fn meta_leader(&self) -> Option<String> {
        let jsz = self.get_json("/jsz")?;
        match jsz["meta_cluster"]["leader"].as_str() {
            Some(leader) if !leader.is_empty() => Some(leader.to_owned()),
            _ => None,
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// NATS servers routed into one cluster with clustered JetStream, so
/// streams can have replicas. Server `i` lives in `dir/n{i+1}`.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers and waits until every one is healthy and sees
    /// a JetStream meta leader.
    pub fn start(dir: &Path, size: usize) -> NatsCluster {
        assert!(size >= 1, "a cluster needs at least one server");
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = NatsCluster::spawn(dir, size);
            let deadline = Instant::now() + CLUSTER_TIMEOUT;
            let waited = cluster
                .servers
                .iter_mut()
                .try_for_each(|s| s.wait_ready(deadline, &|s| s.cluster_ready(size)));
            match waited {
                Ok(()) => return cluster,
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => drop(cluster),
                Err(NotReady::Exited(why) | NotReady::TimedOut(why)) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    fn spawn(dir: &Path, size: usize) -> NatsCluster {
        let ports = free_port_list(3 * size);
        let (client, rest) = ports.split_at(size);
        let (route, monitor) = rest.split_at(size);
        let servers = (0..size)
            .map(|i| {
                let server_dir = dir.join(format!("n{}", i + 1));
                // A failed attempt's raft state names peers that never were.
                let _ = fs::remove_dir_all(&server_dir);
                fs::create_dir_all(&server_dir).expect("creating a NATS server folder");
                let peers: Vec<u16> = (0..size).filter(|&j| j != i).map(|j| route[j]).collect();
                let mut server = NatsServer::configure(
                    &server_dir,
                    &format!("n{}", i + 1),
                    client[i],
                    monitor[i],
                    Some((route[i], &peers)),
                    true,
                );
                server.spawn();
                server
            })
            .collect();
        NatsCluster { servers }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The client URLs comma-joined, as NATS clients take a server list.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Every server's JetStream store folder.
    pub fn store_dirs(&self) -> Vec<PathBuf> {
        self.servers.iter().map(NatsServer::store_dir).collect()
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again with its config and store, and waits until
    /// it is healthy and sees a meta leader.
    pub fn restart(&mut self, i: usize) {
        let size = self.servers.len();
        let server = &mut self.servers[i];
        server.kill();
        server.spawn();
        if let Err(NotReady::Exited(why) | NotReady::TimedOut(why)) =
            server.wait_ready(Instant::now() + CLUSTER_TIMEOUT, &|s| s.cluster_ready(size))
        {
            panic!("restarting: {why}");
        }
    }
}

/// Files under `dir` whose bytes contain `needle`, sorted; symlinks are not
/// followed. Files a running server removes meanwhile are skipped.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    assert!(!needle.is_empty(), "every file contains the empty string");
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => panic!("listing {}: {e}", folder.display()),
        };
        for entry in entries {
            let path = entry.expect("reading a folder entry").path();
            let kind = match fs::symlink_metadata(&path) {
                Ok(meta) => meta.file_type(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => panic!("inspecting {}: {e}", path.display()),
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let bytes = match fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => panic!("reading {}: {e}", path.display()),
                };
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

/// `N` distinct free loopback ports; all are held at once so none repeats.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    free_port_list(N)
        .try_into()
        .expect("free_port_list gives as many ports as asked")
}

fn free_port_list(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// A bare HTTP/1.0 GET against the monitoring port; the server closes the
/// connection after the response, so reading to the end is the whole reply.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{BufRead, BufReader};

    use tempfile::TempDir;

    use super::*;

    /// Polls `check` until it holds or `timeout` passes.
    fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    /// A minimal NATS protocol client: enough to create a stream and publish
    /// to it without a client library.
    struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Client {
        fn connect(port: u16) -> Client {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connecting");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut client = Client {
                reader: BufReader::new(stream.try_clone().unwrap()),
                writer: stream,
            };
            assert!(client.line().starts_with("INFO "));
            client.send("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _INBOX.t 1\r\n");
            client
        }

        fn send(&mut self, text: &str) {
            self.writer.write_all(text.as_bytes()).expect("writing");
        }

        fn line(&mut self) -> String {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("reading");
            line.trim_end().to_owned()
        }

        /// Publishes with a reply subject and returns the reply's payload.
        fn request(&mut self, subject: &str, payload: &str) -> Value {
            self.send(&format!(
                "PUB {subject} _INBOX.t {}\r\n{payload}\r\n",
                payload.len()
            ));
            loop {
                let line = self.line();
                if line == "PING" {
                    self.send("PONG\r\n");
                } else if line.starts_with("MSG _INBOX.t ") {
                    let size: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                    let mut body = vec![0; size + 2];
                    self.reader.read_exact(&mut body).expect("reading a reply");
                    return serde_json::from_slice(&body[..size]).expect("a JSON reply");
                } else {
                    assert!(!line.starts_with("-ERR"), "{line}");
                }
            }
        }
    }

    #[test]
    fn standalone_server_takes_clients_and_runs_jetstream() {
        let dir = TempDir::new().unwrap();
        let mut server = NatsServer::start(dir.path());
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        assert_eq!(server.name(), "cmm-test");
        TcpStream::connect((Ipv4Addr::LOCALHOST, server.port())).expect("a client connection");
        let jsz = server.get_json("/jsz").expect("/jsz answers");
        assert_ne!(jsz["disabled"], true, "{jsz}");
        assert!(server.jetstream_enabled());
        assert!(server.is_running());

        server.kill();
        assert!(!server.is_running());
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, server.port())).is_err());
        server.restart();
        assert!(server.healthy());
        let log = fs::read_to_string(server.log_path()).unwrap();
        assert_eq!(log.matches("Starting nats-server").count(), 2, "{log}");
    }

    #[test]
    fn published_text_is_found_in_the_store() {
        let dir = TempDir::new().unwrap();
        let server = NatsServer::start(dir.path());
        let mut client = Client::connect(server.port());
        let created = client.request(
            "$JS.API.STREAM.CREATE.MARKER",
            r#"{"name":"MARKER","subjects":["marker.>"],"storage":"file"}"#,
        );
        assert!(created.get("error").is_none(), "{created}");
        let ack = client.request("marker.one", "plain-text-marker-7f3a");
        assert_eq!(ack["stream"], "MARKER", "{ack}");

        // The file store writes blocks asynchronously.
        assert!(
            eventually(Duration::from_secs(10), || {
                !files_containing(&server.store_dir(), b"plain-text-marker-7f3a").is_empty()
            }),
            "the published text never reached {}",
            server.store_dir().display()
        );
        assert!(files_containing(&server.store_dir(), b"never-published-9c1e").is_empty());
    }

    #[test]
    fn files_containing_walks_nested_folders() {
        let dir = TempDir::new().unwrap();
        let nested = dir.path().join("a/b");
        fs::create_dir_all(&nested).unwrap();
        fs::write(dir.path().join("top"), b"xx needle xx").unwrap();
        fs::write(nested.join("deep"), b"needle").unwrap();
        fs::write(nested.join("other"), b"need le").unwrap();
        File::create(dir.path().join("empty")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(nested.join("deep"), dir.path().join("link")).unwrap();

        assert_eq!(
            files_containing(dir.path(), b"needle"),
            vec![nested.join("deep"), dir.path().join("top")]
        );
        assert!(files_containing(&dir.path().join("missing"), b"needle").is_empty());
    }

    #[test]
    fn cluster_survives_losing_one_server() {
        let dir = TempDir::new().unwrap();
        let mut cluster = NatsCluster::start(dir.path(), 3);
        assert_eq!(cluster.len(), 3);
        assert_eq!(cluster.url_list(), cluster.urls().join(","));
        let names: Vec<&str> = cluster.servers().iter().map(NatsServer::name).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        for (server, store) in cluster.servers().iter().zip(cluster.store_dirs()) {
            assert!(store.starts_with(dir.path()), "{}", store.display());
            let jsz = server.get_json("/jsz").expect("/jsz answers");
            assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
        }

        // Killing the meta leader is the harder case: the rest must elect.
        let leader = cluster.server(0).meta_leader().expect("a meta leader");
        let victim = names.iter().position(|&n| n == leader).unwrap();
        cluster.kill(victim);
        assert!(!cluster.server(victim).healthy());
        for i in (0..3).filter(|&i| i != victim) {
            assert!(
                eventually(CLUSTER_TIMEOUT, || {
                    let s = cluster.server(i);
                    s.healthy() && s.meta_leader().is_some_and(|l| l != leader)
                }),
                "{} did not recover without {leader}",
                cluster.server(i).name()
            );
        }

        cluster.restart(victim);
        assert!(cluster.server(victim).healthy());
        assert!(cluster.server(victim).meta_leader().is_some());
        // Names and ports stay put, so clients' server lists stay valid.
        assert_eq!(cluster.urls()[victim], cluster.server(victim).url());
    }
}
