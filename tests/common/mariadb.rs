//! Private MariaDB servers for the tests: each a `mariadbd` on a free port
//! with its own datadir, copied from one `mariadb-install-db` template made
//! once per test binary; root logs in without a password and the gateway's
//! backend user (`PROXY_USER`) is created at start. Killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{free_port, local, require, wait_for};

/// The gateway's user in every backend.
pub const PROXY_USER: &str = "sy_proxy";
pub const PROXY_PASSWORD: &str = "proxy-pw-1";

/// A datadir made once per test run by `mariadb-install-db`.
fn template() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(require("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// A private MariaDB server on a free port, killed on drop. Root logs in
/// without a password; the gateway's backend user is created at start.
pub struct MariaDb {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Extra `mariadbd` arguments (e.g. `--ssl-cert=...`).
    extra: Vec<String>,
}

impl MariaDb {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `mariadbd` arguments.
    pub fn start_with(extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template().join("data"))
            .arg(&data)
            .status()
            .expect("cp");
        assert!(status.success());
        let mut db = MariaDb {
            child: None,
            dir,
            port: free_port(),
            extra: extra.to_vec(),
        };
        db.spawn();
        db.root(&format!(
            "CREATE USER '{PROXY_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{PROXY_PASSWORD}'); \
             GRANT ALL ON *.* TO '{PROXY_USER}'@'%';"
        ));
        db
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(require("mariadbd"))
            .arg("--no-defaults")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!(
                "--socket={}",
                self.dir.path().join("s.sock").display()
            ))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--innodb-buffer-pool-size=16M",
                "--max-allowed-packet=128M",
                "--skip-log-bin",
                "--skip-name-resolve",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(require("mariadb"))
                    .args([
                        "--no-defaults",
                        "-uroot",
                        "-h127.0.0.1",
                        "-N",
                        "-e",
                        "SELECT 1",
                    ])
                    .arg(format!("-P{port}"))
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
        );
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    /// Run SQL as root directly; panics on failure.
    pub fn root(&self, sql: &str) -> String {
        let out = mariadb_cli(self.addr(), "root", "", None, sql);
        assert!(
            out.status.success(),
            "direct SQL failed: {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the server said (its datadir goes with
        // the guard): e.g. why it closed a connection.
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- mariadbd log (last {} lines) ----", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Run the `mariadb` CLI in batch mode (`-N -B`), returning its output.
pub fn mariadb_cli(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: Option<&str>,
    sql: &str,
) -> Output {
    let mut c = Command::new(require("mariadb"));
    c.args([
        "--no-defaults",
        "-N",
        "-B",
        "--skip-ssl",
        "--default-character-set=utf8mb4",
    ])
    .arg(format!("-h{}", addr.ip()))
    .arg(format!("-P{}", addr.port()))
    .arg(format!("-u{user}"));
    if !password.is_empty() {
        c.arg(format!("-p{password}"));
    }
    if let Some(db) = db {
        c.arg(db);
    }
    c.arg("-e").arg(sql);
    c.output().expect("run mariadb")
}
