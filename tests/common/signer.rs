//! A real `moat certs signer` on a Unix socket under its own directory in
//! /tmp (short enough for a socket path, and traversable by the gateway's
//! unprivileged account), and its wire protocol spoken directly.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SignerProcess {
    pub dir: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl SignerProcess {
    /// A place for the socket, chosen before anything starts, so the
    /// gateway can be given `--signer unix://PATH` first.
    pub fn prepare() -> SignerProcess {
        let dir = PathBuf::from(format!("/tmp/msig-{}", super::random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        SignerProcess {
            socket: dir.join("enroll.sock"),
            log: dir.join("signer.log"),
            dir,
            child: None,
        }
    }

    /// `unix://SOCKET`, for the gateway's `--signer`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Starts `moat --state-root STATE certs signer` and waits for its socket.
    pub fn start(&mut self, state: &Path) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(super::moat_bin())
            .arg("--state-root")
            .arg(state)
            .args(["certs", "signer", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moat certs signer");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains("listening on") {
            if Instant::now() > deadline
                || self.child.as_mut().unwrap().try_wait().unwrap().is_some()
            {
                panic!("the signer did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `line` (a newline is added) and returns the answer line.
    pub fn exchange(&self, line: &[u8]) -> serde_json::Value {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A signer that stops reading early may reset the rest: the answer
        // still comes.
        let _ = stream
            .write_all(line)
            .and_then(|()| stream.write_all(b"\n"));
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
    }

    pub fn call(&self, request: &serde_json::Value) -> serde_json::Value {
        self.exchange(request.to_string().as_bytes())
    }

    /// SIGTERM, and waits for it to end.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
