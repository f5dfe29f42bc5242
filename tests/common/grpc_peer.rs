//! The grpcio peer (`tests/peers/grpc_peer.py`, the C-core implementation)
//! as a server on a free port, killed on drop, and its one-call client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{WAIT, free_port, local, require, wait_for};

/// python3, checked to import grpc.
pub fn grpc_python() -> PathBuf {
    let python = require("python3");
    let ok = Command::new(&python)
        .args(["-c", "import grpc"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the Python grpcio package is missing: `python3 -m pip install grpcio` (.ci/run does)"
    );
    python
}

pub fn grpc_script() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/grpc_peer.py")
}

/// `grpc_peer.py server PORT`: `test.Echo` (see the script for its methods).
pub struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    pub fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(grpc_python())
            .arg(grpc_script())
            .args(["server", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn grpc_peer.py server");
        wait_for("the grpcio server", WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("grpc_peer.py server exited with {status}");
            }
            std::net::TcpStream::connect(local(port)).ok()
        });
        GrpcServer { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        local(self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One grpcio call of `method` (a name of `test.Echo`, or a `/path`) with
/// `arg` through `target`: the JSON line `grpc_peer.py call` prints
/// (`code`, `details`, `responses`, `trailers`).
pub fn grpc_call(target: SocketAddr, method: &str, arg: &str) -> serde_json::Value {
    let out = Command::new(grpc_python())
        .arg(grpc_script())
        .args(["call", &target.to_string(), method, arg, "10"])
        .stdin(Stdio::null())
        .output()
        .expect("run grpc_peer.py call");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpc_peer.py call {method}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
