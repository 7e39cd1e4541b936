//! A real `moat gateway` in front of a real `moat engine`, with a PKI
//! made by `moat certs`, and the real `docker` CLI talking to it over
//! mutual TLS with a user's certificate bundle.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::engine::EngineProcess;

pub struct GatewayProcess {
    pub engine: EngineProcess,
    /// `127.0.0.1:PORT`.
    pub address: String,
    pub audit_dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl GatewayProcess {
    /// An engine with `busybox:test` imported, a PKI, and a gateway.
    pub fn start() -> GatewayProcess {
        GatewayProcess::start_with(&[])
    }

    /// The same, with extra `moat gateway` arguments.
    pub fn start_with(extra: &[&str]) -> GatewayProcess {
        let engine = EngineProcess::start();
        engine.import_busybox();
        let state = engine.path("state");
        super::moat_ok(&[
            "--state-root",
            state.to_str().unwrap(),
            "certs",
            "init",
            "--ip",
            "127.0.0.1",
        ]);
        let audit_dir = state.join("audit");
        let mut gateway = GatewayProcess {
            engine,
            address: String::new(),
            audit_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        gateway.spawn();
        gateway
    }

    pub fn state(&self) -> PathBuf {
        self.engine.path("state")
    }

    fn spawn(&mut self) {
        let log_path = self.engine.path("gateway.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(super::moat_bin())
            .arg("--state-root")
            .arg(self.state())
            .arg("gateway")
            .args(["--listen", "127.0.0.1:0", "--engine"])
            .arg(format!("unix://{}", self.engine.socket.display()))
            .args(["--reload-every", "1"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moat gateway");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if let Some(rest) = log.split("listening on ").nth(1) {
                self.address = rest.split_whitespace().next().unwrap().to_owned();
                return;
            }
            if Instant::now() > deadline
                || self.child.as_mut().unwrap().try_wait().unwrap().is_some()
            {
                panic!("the gateway did not start:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The enrollment port's address, when started with `--enroll-listen`.
    pub fn enroll_address(&self) -> Option<String> {
        let log = self.log();
        let rest = log.split("enrollment on ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.engine.path("gateway.log")).unwrap_or_default()
    }

    /// `moat --state-root STATE ARGS...`, which must succeed.
    pub fn moat(&self, args: &[&str]) -> String {
        let state = self.state();
        let mut full = vec!["--state-root", state.to_str().unwrap()];
        full.extend_from_slice(args);
        super::moat_ok(&full)
    }

    /// Issues a client certificate for `user` in `groups` and returns the
    /// bundle directory (ca.pem, cert.pem, key.pem).
    pub fn issue(&self, user: &str, groups: &[&str]) -> PathBuf {
        let dir = self.engine.path(&format!("clients/{user}"));
        let mut args = vec!["certs", "issue", user];
        for group in groups {
            args.extend_from_slice(&["--group", group]);
        }
        let dir_text = dir.to_str().unwrap().to_owned();
        args.extend_from_slice(&["--out", &dir_text]);
        self.moat(&args);
        dir
    }

    /// A `docker` command through the gateway with the bundle in `certs`.
    pub fn docker_cmd(&self, certs: &Path) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", "60", "docker"]);
        cmd.env("DOCKER_HOST", format!("tcp://{}", self.address))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .env("DOCKER_CONFIG", self.engine.path("docker-config"))
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    pub fn docker(&self, certs: &Path, args: &[&str]) -> Output {
        self.docker_cmd(certs)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs docker through the gateway and panics unless it succeeds.
    pub fn docker_ok(&self, certs: &Path, args: &[&str]) -> String {
        let out = self.docker(certs, args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}{}\ngateway log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs docker through the gateway, expects it to fail, and returns
    /// its stderr.
    pub fn docker_err(&self, certs: &Path, args: &[&str]) -> String {
        let out = self.docker(certs, args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded but should have been refused:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Every record of the audit log, in order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.audit_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    }

    /// The completed event records (one per call).
    pub fn completed_calls(&self) -> Vec<serde_json::Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["kind"] == "event" && r["stage"] == "completed")
            .collect()
    }

    /// Stops the gateway with SIGTERM (it writes a last checkpoint).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
