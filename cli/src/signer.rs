//! `moat certs signer`: the one process that signs for enrollment.
//!
//! The gateway faces the network and drops root, so it cannot read the CA
//! key, and should not: a gateway taken over must not be able to mint
//! certificates. This small root process holds that ability instead, and
//! uses it only as `moat_certs::enroll` allows (an outstanding one-time
//! token, or the holder of a valid certificate renewing it). It listens on a
//! Unix socket only root and the gateway's group can open (0660
//! root:GROUP), reads one JSON line per connection (at most 64 KiB, within
//! a few seconds) and answers one. Every outcome is logged to stderr as
//! `key=value` fields; a token never is.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use moat_certs::Pki;
use moat_certs::enroll::{self, MAX_REQUEST, Signed, SignerAnswer, SignerRequest};
use nix::unistd::{Gid, Group, Uid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// How long a client has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once; signing is serialized by the PKI lock anyway.
const CONCURRENT: usize = 16;

pub fn run(pki_dir: &Path, socket: &Path, group: &str) -> Result<()> {
    if !Uid::effective().is_root() {
        bail!(
            "the signer runs as root: it reads the CA key, which nothing else may (run it with sudo, or let `moat up` start it)"
        );
    }
    let pki = Arc::new(Pki::open(pki_dir)?);
    let gid = socket_group(group)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = bind(socket, gid)?;
        eprintln!(
            "moat signer: listening on unix://{} (0660 root:{group}), PKI {}",
            socket.display(),
            pki_dir.display()
        );
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        let serve = async {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("moat signer: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let pki = pki.clone();
                let slot = slots.clone().try_acquire_owned();
                tokio::spawn(async move {
                    match slot {
                        Ok(_slot) => serve(pki, stream).await,
                        Err(_) => {
                            log("-", &peer(&stream), "refused", "error=\"busy\"");
                            let (_, write) = stream.into_split();
                            let _ = answer(write, &refused("the signer is busy; try again")).await;
                        }
                    }
                });
            }
        };
        tokio::select! {
            () = serve => {}
            () = crate::engine::shutdown_signal() => {}
        }
        let _ = std::fs::remove_file(socket);
        eprintln!("moat signer: stopped");
        Ok(())
    })
}

/// The group whose members may ask for signatures. The gateway's own
/// account (and so its group) is made here when missing, because the
/// signer starts before the gateway has ever run.
fn socket_group(name: &str) -> Result<Gid> {
    if let Some(group) = Group::from_name(name)? {
        return Ok(group.gid);
    }
    if name == moat_gateway::privilege::GATEWAY_USER {
        moat_gateway::privilege::ensure_account()?;
        if let Some(group) = Group::from_name(name)? {
            return Ok(group.gid);
        }
    }
    bail!("no group {name:?}: the socket's group must exist (--group)")
}

/// Binds the socket 0660 root:`gid`. It is created 0600 (umask) and only
/// then opened to the group, so there is no moment it is open to others.
fn bind(socket: &Path, gid: Gid) -> Result<UnixListener> {
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                bail!("another signer is listening on {}", socket.display());
            }
            std::fs::remove_file(socket)
                .with_context(|| format!("removing the stale {}", socket.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(_) => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", socket.display()))?;
    nix::unistd::chown(socket, Some(Uid::from_raw(0)), Some(gid))
        .with_context(|| format!("chown {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok(listener)
}

async fn serve(pki: Arc<Pki>, stream: UnixStream) {
    let peer = peer(&stream);
    let (read, write) = stream.into_split();
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        BufReader::new(read)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line),
    )
    .await;
    let request = match read {
        Err(_) => Err("the request did not arrive in time".to_owned()),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            Err(format!("the request is over {} KiB", MAX_REQUEST / 1024))
        }
        // serde's message could quote a value, and a value could be a
        // token: say only what kind of problem it is.
        Ok(Ok(_)) => serde_json::from_slice::<SignerRequest>(&line).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Io | Category::Syntax => "malformed request: not JSON",
                Category::Eof => "malformed request: incomplete JSON",
                Category::Data => {
                    "malformed request: not an enroll or renew request with exactly its fields"
                }
            }
            .to_owned()
        }),
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            log("-", &peer, "refused", &format!("error={error:?}"));
            let _ = answer(write, &refused(&error)).await;
            return;
        }
    };
    let op = request.op();
    if let SignerRequest::ServerKey {} = request {
        // Only the gateway's group can reach this socket; it already holds
        // the server key it started with, and asks again after a renewal.
        let material = tokio::task::spawn_blocking(move || pki.server_material()).await;
        let line = match material {
            Ok(Ok(material)) => {
                log(op, &peer, "answered", "");
                serde_json::to_vec(&enroll::ServerKey {
                    server_cert: material.cert_pem,
                    server_key: material.key_pem,
                })
            }
            Ok(Err(e)) => {
                log(op, &peer, "refused", &format!("error={:?}", e.to_string()));
                serde_json::to_vec(&refused(&e.to_string()))
            }
            Err(e) => {
                log(op, &peer, "failed", &format!("error={:?}", e.to_string()));
                serde_json::to_vec(&refused("the signer failed; see its log"))
            }
        };
        let mut write = write;
        if let Ok(mut line) = line {
            line.push(b'\n');
            let _ = write.write_all(&line).await;
            let _ = write.shutdown().await;
        }
        return;
    }
    let outcome = tokio::task::spawn_blocking(move || {
        let fields = match &request {
            SignerRequest::Enroll { .. } | SignerRequest::ServerKey {} => String::new(),
            SignerRequest::Renew { serial, user, .. } => {
                format!(" renewing={serial} caller={user:?}")
            }
        };
        (enroll::sign(&pki, &request), fields)
    })
    .await;
    let reply = match outcome {
        Ok((Ok(issued), fields)) => {
            let signed = Signed::from(issued);
            log(
                op,
                &peer,
                "signed",
                &format!(
                    "user={:?} groups={:?} serial={} not_after={}{fields}",
                    signed.user,
                    signed.groups.join(","),
                    signed.serial,
                    crate::certs::rfc3339(signed.not_after)
                ),
            );
            SignerAnswer::Signed(signed)
        }
        Ok((Err(e), fields)) => {
            log(
                op,
                &peer,
                "refused",
                &format!("error={:?}{fields}", e.to_string()),
            );
            refused(&e.to_string())
        }
        Err(e) => {
            log(op, &peer, "failed", &format!("error={:?}", e.to_string()));
            refused("the signer failed; see its log")
        }
    };
    if let Err(e) = answer(write, &reply).await {
        eprintln!("moat signer: op={op} {peer} answer not delivered: {e}");
    }
}

fn refused(error: &str) -> SignerAnswer {
    SignerAnswer::Refused {
        error: error.to_owned(),
    }
}

async fn answer(
    mut write: tokio::net::unix::OwnedWriteHalf,
    reply: &SignerAnswer,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("answers serialize");
    line.push(b'\n');
    write.write_all(&line).await?;
    write.shutdown().await
}

fn peer(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => format!(
            "peer_uid={} peer_pid={}",
            cred.uid(),
            cred.pid().map_or("-".to_owned(), |p| p.to_string())
        ),
        Err(_) => "peer_uid=-".to_owned(),
    }
}

fn log(op: &str, peer: &str, outcome: &str, fields: &str) {
    eprintln!("moat signer: op={op} outcome={outcome} {peer} {fields}");
}
