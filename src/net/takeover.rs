//! Binary upgrade without losing a connection: the new process takes the old
//! one's listening sockets over a Unix socket (`SCM_RIGHTS`, as Envoy's hot
//! restart does), serves on them, then tells the old process to drain and
//! exit. The sockets are never closed, so the kernel's accept queue and every
//! SYN in it carry over; for a while both processes accept on them.
//!
//! `switchyard run --takeover PATH`: when a gateway listens on `PATH`, take
//! its sockets; else bind as usual. Either way, once serving, listen on
//! `PATH` for the next upgrade.
//!
//! The exchange, one Unix stream connection:
//! 1. new → old: `listeners\n`
//! 2. old → new: one message, the addresses (one per line) with the
//!    listening sockets as `SCM_RIGHTS`, in the same order
//! 3. new → old, once it accepts on them: `drain\n`
//! 4. old → new: `ok\n`; the old process stops accepting, drains its
//!    connections (at most `drain_timeout`) and exits.
//!
//! If the new process goes away before step 3, the old one keeps serving.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Most sockets handed over (listeners and the admin server).
const MAX_FDS: usize = 200;
/// Longest address list.
const MAX_TEXT: usize = 64 * 1024;

/// The sockets taken from the old process, and the connection to tell it
/// to drain once this one serves.
pub struct Taken {
    pub sockets: HashMap<SocketAddr, std::net::TcpListener>,
    old: UnixStream,
}

/// Ask the gateway listening on `path` for its sockets. `Ok(None)`: no
/// gateway listens there (a first start).
pub fn request(path: &Path) -> io::Result<Option<Taken>> {
    let mut old = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    old.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    old.write_all(b"listeners\n")?;
    let mut text = vec![0u8; MAX_TEXT];
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &old,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    let text = text.get(..got.bytes).unwrap_or_default();
    let text = std::str::from_utf8(text)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "takeover: bad address list"))?;
    let addrs: Vec<SocketAddr> = text
        .lines()
        .map(|l| {
            l.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("takeover: bad address {l:?}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "takeover: {} addresses but {} sockets were handed over",
                addrs.len(),
                fds.len()
            ),
        ));
    }
    let sockets = addrs
        .into_iter()
        .zip(fds)
        .map(|(a, fd)| (a, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Some(Taken { sockets, old }))
}

impl Taken {
    /// This process serves now: tell the old one to drain and exit.
    pub fn finish(mut self) -> io::Result<()> {
        self.old.write_all(b"drain\n")?;
        let mut line = String::new();
        BufReader::new(&self.old).read_line(&mut line)?;
        if line.trim() == "ok" {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "takeover: the old process did not acknowledge",
            ))
        }
    }
}

/// The sockets a gateway lends to its successor, at the time it asks.
pub type Lend = Arc<dyn Fn() -> Vec<(SocketAddr, OwnedFd)> + Send + Sync>;

/// Listen on `path` for a successor (replacing a stale socket file there);
/// `drain` is called when one took the sockets and serves. Runs on its own
/// thread: the exchange is a few blocking calls.
pub fn serve(path: PathBuf, lend: Lend, drain: Box<dyn Fn() + Send + Sync>) -> io::Result<()> {
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    tracing::info!(path = %path.display(), "listening for a binary upgrade");
    std::thread::Builder::new()
        .name("takeover".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match answer(conn, &lend) {
                    Ok(true) => {
                        tracing::info!("binary upgrade: the new process serves; draining");
                        drain();
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "binary upgrade failed; still serving"),
                }
            }
        })?;
    Ok(())
}

/// One successor's exchange; `true` when it took over.
fn answer(conn: UnixStream, lend: &Lend) -> io::Result<bool> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "listeners" {
        return Ok(false);
    }
    let lent = lend();
    if lent.len() > MAX_FDS {
        return Err(io::Error::other("takeover: too many sockets"));
    }
    let text: String = lent.iter().map(|(a, _)| format!("{a}\n")).collect();
    let fds: Vec<BorrowedFd<'_>> = lent.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("takeover: control buffer too small"));
    }
    rustix::net::sendmsg(
        &conn,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    drop(lent);
    tracing::info!("binary upgrade: listening sockets handed over");
    line.clear();
    // The successor needs as long as it takes to start; wait for it.
    conn.set_read_timeout(None)?;
    if reader.read_line(&mut line)? == 0 || line.trim() != "drain" {
        return Ok(false);
    }
    (&conn).write_all(b"ok\n")?;
    Ok(true)
}
