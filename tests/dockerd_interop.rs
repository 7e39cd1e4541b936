//! Images move between a real dockerd and moat: what `docker save` writes
//! against dockerd 20.10 (Debian's `docker.io`, installed by
//! `scripts/deps.sh`) loads into moat's engine and runs there, and so does
//! the same image as an OCI archive (which dockerd 20.10 cannot write;
//! skopeo converts it). What moat saves again is read back by skopeo.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::engine::EngineProcess;

/// A dockerd of its own: data, exec state, pid file and socket under a
/// temporary directory, vfs storage, no iptables or bridge. Stopped (and
/// its managed containerd with it) when dropped.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // An empty configuration file, so the host's /etc/docker/daemon.json
        // (if any) plays no part.
        std::fs::write(path("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(path("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(path("daemon.json"))
            .arg("--data-root")
            .arg(path("data"))
            .arg("--exec-root")
            .arg(path("exec"))
            .arg("--pidfile")
            .arg(path("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", path("docker.sock").display()))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("dockerd: {e} (scripts/deps.sh installs Debian's docker.io)")
            });
        let mut dockerd = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dockerd.docker(&["version"]).status.success() {
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                panic!("dockerd exited ({status}):\n{}", dockerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer:\n{}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        dockerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["--kill-after=5", "60", "docker"])
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} against dockerd: {}{}\ndockerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn what_dockerd_saves_loads_and_runs_on_moat() {
    let engine = EngineProcess::start();
    let dockerd = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let file = |name: &str| -> PathBuf { work.path().join(name) };

    // An image made by dockerd, with configuration of its own to carry over.
    let rootfs = engine.busybox_tar();
    dockerd.docker_ok(&[
        "import",
        "--change",
        "ENV GREETING=made-by-dockerd",
        "--change",
        r#"CMD ["sh", "-c", "echo $GREETING"]"#,
        path_str(&rootfs),
        "interop:imported",
    ]);
    dockerd.docker_ok(&["tag", "interop:imported", "interop:saved"]);
    let dockerd_id = dockerd.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "interop:saved"]);
    let saved = file("dockerd-saved.tar");
    dockerd.docker_ok(&["save", "-o", path_str(&saved), "interop:saved"]);

    // dockerd's docker-archive.
    let out = engine.docker_ok(&["load", "-i", path_str(&saved)]);
    assert!(out.contains("Loaded image: interop:saved"), "{out}");
    let moat_id = engine.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "interop:saved"]);
    assert_eq!(
        moat_id, dockerd_id,
        "the configuration came through unchanged"
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "interop:saved"]),
        "made-by-dockerd\n"
    );

    // The same image as an OCI archive.
    let oci = file("oci.tar");
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", saved.display()),
        &format!(
            "oci-archive:{}:docker.io/library/interop:oci",
            oci.display()
        ),
    ]);
    let out = engine.docker_ok(&["load", "-i", path_str(&oci)]);
    assert!(out.contains("interop:oci"), "{out}");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", "interop:oci"]),
        "made-by-dockerd\n"
    );

    // What moat saves, skopeo reads: both the Docker and the OCI side.
    let resaved = file("moat-saved.tar");
    engine.docker_ok(&["save", "-o", path_str(&resaved), "interop:saved"]);
    for transport in ["docker-archive", "oci-archive"] {
        let config: serde_json::Value = serde_json::from_str(&skopeo(&[
            "inspect",
            "--config",
            &format!("{transport}:{}", resaved.display()),
        ]))
        .unwrap();
        assert!(
            config["config"]["Env"]
                .to_string()
                .contains("GREETING=made-by-dockerd"),
            "{transport}: {config}"
        );
    }
}
