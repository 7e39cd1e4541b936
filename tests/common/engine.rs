//! A real `moat engine` process on a Unix socket under a temporary
//! directory, the busybox image imported into it, and the real `docker`
//! CLI pointed at it.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct EngineProcess {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub run_root: PathBuf,
    child: Option<Child>,
}

impl EngineProcess {
    /// Starts an engine and waits until it answers `/_ping`.
    pub fn start() -> EngineProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let run_root = PathBuf::from(format!("/tmp/me-{}", super::random_hex(4)));
        let mut engine = EngineProcess {
            socket: dir.path().join("engine.sock"),
            dir,
            run_root,
            child: None,
        };
        engine.spawn();
        engine
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("engine.log")).unwrap();
        let child = Command::new(super::moat_bin())
            .arg("--state-root")
            .arg(self.dir.path().join("state"))
            .arg("engine")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--run-root")
            .arg(&self.run_root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moat engine");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .docker(&["version", "--format", "{{.Server.Version}}"])
            .status
            .success()
        {
            if Instant::now() > deadline {
                panic!("the engine did not answer: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Kills the engine with SIGKILL and starts a new one on the same state.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `docker` command aimed at this engine, with its own config dir,
    /// ended after 60 seconds so a hang shows which command it was.
    pub fn docker_cmd(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", "60", "docker"]);
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Runs docker and panics with its output unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}{}\nengine log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A busybox root filesystem as a tarball, for `docker import`.
    pub fn busybox_tar(&self) -> PathBuf {
        let root = self.dir.path().join("busybox-rootfs");
        moat_engine::busybox::write_rootfs(&root).unwrap();
        let tar = self.dir.path().join("busybox.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        tar
    }

    /// `docker import` of the busybox tarball as `busybox:test`.
    pub fn import_busybox(&self) {
        let tar = self.busybox_tar();
        self.docker_ok(&["import", tar.to_str().unwrap(), "busybox:test"]);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_root);
    }
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
