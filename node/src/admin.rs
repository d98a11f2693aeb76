//! The local admin socket: how `weft status`, `weft invite` and `weft revoke` talk
//! to a running daemon, which alone holds the store. Every node serves it,
//! mesh member or not (`weft status` works on a static configuration too).
//!
//! A Unix stream socket at `Config::admin_socket`, mode 0600, so only the user
//! running the daemon (root) can use it. One request per connection: a
//! 4-byte big-endian length and a postcard-encoded [`Request`]; the answer
//! is framed the same way. It owns the framing, both ends of it ([`call`]
//! for the commands, [`bind`] for the daemon) and the socket file. It never
//! answers a request itself: each one is handed, through a bounded queue,
//! to the daemon's main task, which owns all state; a connection's task
//! waits for the answer, the main task never waits for a connection.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Largest request or response accepted.
/// A status snapshot of a large mesh is the biggest answer.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// What a local client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Issue an invite token.
    Invite {
        /// Name the invitee will get.
        name: Option<String>,
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
    /// Revoke a member by name.
    Revoke {
        /// The member's name.
        name: String,
    },
    /// Renew this node's certificate now.
    Renew,
    /// Make member `name` an authority holder.
    AuthorityAdd {
        /// The member's name.
        name: String,
    },
    /// Take holder `name`'s key out of the authority set.
    AuthorityRemove {
        /// The holder's name.
        name: String,
    },
    /// The authority set.
    AuthorityList,
    /// Everything `weft status` shows.
    Status,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// A token's text.
    Token(String),
    /// Done; the text says what happened.
    Done(String),
    /// The request failed; the message says why.
    Error(String),
    /// The node's status.
    Status(Box<crate::status::Snapshot>),
    /// The authority set.
    Authorities(crate::mesh::authorities::AuthorityList),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No daemon listens on the socket.
    #[error("the weft daemon is not running")]
    NotRunning,
    /// The socket failed.
    #[error("admin socket: {0}")]
    Io(#[from] io::Error),
    /// The answer was not understood.
    #[error("admin socket: malformed answer")]
    Protocol,
}

/// A request waiting for the main task's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Sends `request` to the daemon at `path` and waits for the answer.
pub fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(CallError::NotRunning)
        }
        Err(e) => return Err(CallError::Io(e)),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = postcard::to_stdvec(request).map_err(|_| CallError::Protocol)?;
    stream.write_all(&(body.len() as u32).to_be_bytes())?;
    stream.write_all(&body)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(CallError::Protocol);
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(|_| CallError::Protocol)
}

/// Binds the socket (mode 0600), replacing a stale one left by a crashed
/// daemon, and serves it until the daemon exits.
pub fn bind(path: &Path, requests: mpsc::Sender<Pending>) -> anyhow::Result<SocketGuard> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!(
                "another weft daemon answers on {}; is this node already running?",
                path.display()
            ),
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the admin socket {}", path.display()))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, requests).await {
                    debug!(error = %e, "admin request failed");
                }
            });
        }
    });
    Ok(SocketGuard {
        path: path.to_path_buf(),
        task,
    })
}

async fn serve_one(
    mut stream: tokio::net::UnixStream,
    requests: mpsc::Sender<Pending>,
) -> anyhow::Result<()> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len)).await??;
    let len = u32::from_be_bytes(len) as usize;
    anyhow::ensure!(len <= MAX_MESSAGE, "request too large");
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body)).await??;
    let response = match postcard::from_bytes::<Request>(&body) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            requests.send((request, tx)).await?;
            rx.await?
        }
        Err(_) => Response::Error("malformed request".into()),
    };
    let body = postcard::to_stdvec(&response)?;
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    Ok(())
}

/// Removes the socket when the daemon stops.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
