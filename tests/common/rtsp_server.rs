//! A private GStreamer RTSP server (`tests/peers/rtsp_server.py`: H.264
//! video + PCMU audio on the given mounts) on a free port, killed on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{WAIT, free_port, local, wait_for};

/// Debian's python3: it has `gi` (the `python3` on PATH may be a venv or pyenv without it).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A private GStreamer RTSP server on a free port, killed on drop.
pub struct RtspServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RtspServer {
    pub fn start(mounts: &[&str]) -> Self {
        Self::start_on(free_port(), mounts)
    }

    /// A server on `port` (e.g. again on a killed server's port).
    pub fn start_on(port: u16, mounts: &[&str]) -> Self {
        let gi_ok = Command::new(SYSTEM_PYTHON)
            .args([
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            gi_ok,
            "{SYSTEM_PYTHON} cannot import GstRtspServer: install python3-gi gir1.2-gst-rtsp-server-1.0 (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/rtsp_server.py");
        let log = dir.path().join("rtsp_server.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut child = Command::new(SYSTEM_PYTHON)
            .arg(&script)
            .arg(port.to_string())
            .args(mounts)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the RTSP server");
        wait_for("the RTSP server to listen", WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the RTSP server exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let ready = std::fs::read_to_string(&log).unwrap_or_default();
            (ready.contains("ready") && TcpStream::connect(local(port)).is_ok()).then_some(())
        });
        RtspServer {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}{path}", self.addr())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}
