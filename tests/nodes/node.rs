//! Private RabbitMQ nodes for tests: each on its own ports, node name, config file and data
//! directory under a temp dir (the system's config pins a listener to 5672), sharing an Erlang
//! cookie so they can form a cluster. Stopped and deleted when dropped, even after a failure.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

/// Debian's server and CLI, run directly (the /usr/sbin wrappers switch to the rabbitmq user).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// How long a node may take to boot on a busy machine.
const BOOT: Duration = Duration::from_secs(120);

/// A free local port (released at once; the node binds it moments later), never one handed out
/// before in this process: a port released at once can come back from the next bind, and two
/// nodes of one cluster given the same port left one of them unable to boot.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A directory that holds every node of a test (and their shared cookie), deleted at the end.
pub struct Site {
    pub dir: PathBuf,
}

impl Site {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("relay-nodes-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let cookie = dir.join("home/.erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string().to_uppercase()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        Self { dir }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Node {
    pub name: String,
    /// The AMQP port (plain, or TLS when the config says so).
    pub port: u16,
    dir: PathBuf,
    home: PathBuf,
    dist_port: u16,
    /// The server process, reaped when the node is dropped.
    server: std::sync::Mutex<Option<std::process::Child>>,
}

impl Node {
    /// Starts a node whose config is `listeners` (lines naming the AMQP listener, TLS options…)
    /// plus what every test node needs. Returns once it accepts commands.
    pub fn start(site: &Site, label: &str, port: u16, listeners: &str) -> Self {
        let node = Self::prepare(site, label, port, listeners);
        node.boot();
        node.await_startup();
        node
    }

    /// Writes the node's files without starting it (to boot several at once).
    pub fn prepare(site: &Site, label: &str, port: u16, listeners: &str) -> Self {
        let dir = site.dir.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "{listeners}\nloopback_users = none\nlog.console = false\nlog.file.level = warning\n\
             management.tcp.port = {}\nvm_memory_high_watermark.relative = 0.4\n",
            free_port()
        );
        std::fs::write(dir.join("rabbitmq.conf"), config).unwrap();
        // No plugins: nothing else to bind, a faster boot.
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let name = format!("{label}-{}@localhost", site.dir.file_name().unwrap().to_string_lossy());
        Self { name, port, dir, home: site.dir.join("home"), dist_port: free_port(), server: Default::default() }
    }

    fn env(&self, command: &mut Command) {
        let d = &self.dir;
        command
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_NODE_PORT", self.port.to_string());
    }

    /// Starts the Erlang VM in the background.
    pub fn boot(&self) {
        let mut command = Command::new(SERVER);
        self.env(&mut command);
        let out = std::fs::File::create(self.dir.join("server.out")).unwrap();
        command.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = command.spawn().expect("rabbitmq-server starts (Debian's rabbitmq-server package)");
        *self.server.lock().unwrap() = Some(child);
    }

    /// Waits until the node has booted. Until it has registered its name, `await_startup` fails
    /// at once instead of waiting, so it is asked again until the boot deadline.
    pub fn await_startup(&self) {
        let deadline = std::time::Instant::now() + BOOT;
        loop {
            let mut command = Command::new(CTL);
            self.env(&mut command);
            let status = command.arg("-n").arg(&self.name).args(["await_startup", "--timeout", "60"]).output();
            if status.is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not boot:\n{}",
                self.name,
                std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `rabbitmqctl -n NODE args`, failing the test if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut command = Command::new(CTL);
        self.env(&mut command);
        let output = command.arg("-n").arg(&self.name).args(args).output().expect("rabbitmqctl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} on {}: {}{}\n{}",
            self.name,
            text,
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default()
        );
        text
    }

    /// Makes this node a member of `other`'s cluster.
    pub fn join(&self, other: &Node) {
        self.ctl(&["stop_app"]);
        self.ctl(&["join_cluster", &other.name]);
        self.ctl(&["start_app"]);
    }

    pub fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://guest:guest@{host}:{}/%2f", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let mut command = Command::new(CTL);
        self.env(&mut command);
        let _ = command.arg("-n").arg(&self.name).args(["shutdown", "--timeout", "30"]).output();
        if let Some(mut server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

const DIAGNOSTICS: &str = "/usr/lib/rabbitmq/bin/rabbitmq-diagnostics";

impl Node {
    /// Waits until stopping this node would leave every quorum queue a majority (the nodes that
    /// were away have rejoined and caught up), as an operator checks before a rolling restart.
    /// The node tells this only when asked, so it is asked until it says so.
    pub fn await_not_quorum_critical(&self) {
        let deadline = std::time::Instant::now() + BOOT;
        loop {
            let mut command = Command::new(DIAGNOSTICS);
            self.env(&mut command);
            let output = command.arg("-n").arg(&self.name).arg("check_if_node_is_quorum_critical").output();
            if output.is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{} stayed quorum-critical", self.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
