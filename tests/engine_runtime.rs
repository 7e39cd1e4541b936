//! The engine's runtime, driven through its Rust API with real containers:
//! user namespaces, Docker's hardening, cgroup limits, exec, surviving an
//! engine restart, and leaving nothing behind. Runs as root.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use common::rootfs::{busybox_layer, static_probe};
use moat_api::container::{ContainerConfig, HostConfig};
use moat_engine::runtime::{CreateRequest, Runtime, RuntimeConfig, StateName};
use moat_engine::shim::protocol::{AttachHeader, ExecRequest};
use moat_engine::userns::IdMap;

struct Engine {
    _state: tempfile::TempDir,
    run_root: PathBuf,
    runtime: Option<Runtime>,
    layer: PathBuf,
    map: IdMap,
    config: RuntimeConfig,
}

impl Engine {
    fn new() -> Engine {
        let state = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let run_root = PathBuf::from(format!("/tmp/mt-{}", &random_hex()[..8]));
        let map = IdMap::for_remap_user().unwrap();
        let layer = busybox_layer(&state.path().join("layer"), &map);
        let config = RuntimeConfig {
            state_root: state.path().join("engine"),
            run_root: run_root.clone(),
            shim_binary: common::moat_bin(),
            id_map: map,
            cgroup_parent: "/moat-test".into(),
            log_max_size: 0,
            log_max_files: 1,
            remove_on_exit: true,
        };
        let runtime = Runtime::open(config.clone()).unwrap();
        Engine {
            _state: state,
            run_root,
            runtime: Some(runtime),
            layer,
            map,
            config,
        }
    }

    fn rt(&self) -> &Runtime {
        self.runtime.as_ref().unwrap()
    }

    /// Drops the runtime and opens a new one on the same state, as a
    /// restarted engine does.
    fn restart(&mut self) {
        self.runtime = None;
        self.runtime = Some(Runtime::open(self.config.clone()).unwrap());
    }

    fn create(&self, cmd: &[&str], host: HostConfig) -> String {
        self.create_with(ContainerConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            host_config: host,
            ..ContainerConfig::default()
        })
    }

    fn create_with(&self, config: ContainerConfig) -> String {
        self.rt()
            .create(CreateRequest {
                name: None,
                config,
                image: "busybox:test".into(),
                image_id: String::new(),
                layers: vec![self.layer.clone()],
            })
            .unwrap()
            .id
    }

    /// Starts with stdout and stderr attached; returns (exit code, stdout, stderr).
    fn run(&self, cmd: &[&str], host: HostConfig) -> (i32, String, String) {
        let id = self.create(cmd, host);
        let result = self.run_id(&id);
        self.rt().remove(&id, true).unwrap();
        result
    }

    fn run_id(&self, id: &str) -> (i32, String, String) {
        let header = AttachHeader {
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let mut streams = self.rt().start(id, &[header]).unwrap();
        let (out, err) = demux_all(&mut streams[0]);
        let status = self.rt().wait(id).unwrap();
        (status.exit_code, out, err)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::env::var_os("MOAT_KEEP_TEST_STATE").is_some() {
            eprintln!("kept: {}", self.config.state_root.display());
            std::mem::forget(std::mem::replace(
                &mut self._state,
                tempfile::tempdir().unwrap(),
            ));
            return;
        }
        if let Some(rt) = &self.runtime {
            for record in rt.list().unwrap_or_default() {
                let _ = rt.remove(&record.id, true);
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_root);
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads Docker-framed output to the end; returns (stdout, stderr).
fn demux_all(stream: &mut UnixStream) -> (String, String) {
    let mut bytes = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.read_to_end(&mut bytes).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let payload = &rest[8..8 + len];
        match rest[0] {
            1 => out.extend_from_slice(payload),
            _ => err.extend_from_slice(payload),
        }
        rest = &rest[8 + len..];
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn host_status_uid(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned()
}

#[test]
fn root_inside_is_an_unprivileged_uid_outside() {
    let engine = Engine::new();
    let (code, out, err) = engine.run(&["id"], HostConfig::default());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");

    let id = engine.create(&["sleep", "30"], HostConfig::default());
    engine.rt().start(&id, &[]).unwrap();
    let pid = engine.rt().state(&id).unwrap().pid;
    let uid = host_status_uid(pid);
    let expected = engine.map.uid.to_string();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == expected),
        "host sees {uid}, expected {expected}"
    );
    engine.rt().remove(&id, true).unwrap();
}

#[test]
fn files_written_to_a_bind_mount_belong_to_the_remapped_uid() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let engine = Engine::new();
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = HostConfig {
        binds: vec![format!("{}:/data", shared.path().display())],
        ..HostConfig::default()
    };
    let (code, _, err) = engine.run(&["touch", "/data/made-inside"], host);
    assert_eq!(code, 0, "{err}");
    let meta = std::fs::metadata(shared.path().join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (engine.map.uid, engine.map.gid));

    // Read-only binds are read-only.
    let host = HostConfig {
        binds: vec![format!("{}:/data:ro", shared.path().display())],
        ..HostConfig::default()
    };
    let (code, _, err) = engine.run(&["touch", "/data/nope"], host);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
}

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long r = -1;
    if (!strcmp(argv[1], "keyctl")) r = syscall(SYS_keyctl, 0, 0, 0, 0, 0);
    else if (!strcmp(argv[1], "unshare")) r = unshare(CLONE_NEWUSER);
    else if (!strcmp(argv[1], "clone")) r = syscall(SYS_clone, CLONE_NEWUSER | 17, 0, 0, 0, 0);
    if (r == 0) { printf("%s: allowed\n", argv[1]); return 0; }
    if (r > 0) { printf("%s: allowed\n", argv[1]); return 0; }
    printf("%s: %s\n", argv[1], strerror(errno));
    return 1;
}
"#;

#[test]
fn the_container_cannot_escape_its_confinement() {
    let engine = Engine::new();
    let probes = tempfile::tempdir().unwrap();
    let probe = static_probe(probes.path(), "probe", PROBE);
    let host = || HostConfig {
        binds: vec![format!("{}:/probe:ro", probe.display())],
        ..HostConfig::default()
    };
    let cases: [(&[&str], &str); 8] = [
        (&["mount", "-t", "tmpfs", "none", "/mnt"], "mount"),
        (
            &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"],
            "/proc/sys",
        ),
        (&["sh", "-c", "echo x > /proc/sysrq-trigger"], "sysrq"),
        (&["/probe", "keyctl"], "keyctl"),
        (&["/probe", "unshare"], "unshare"),
        (&["/probe", "clone"], "clone(CLONE_NEWUSER)"),
        (&["unshare", "-U", "true"], "unshare applet"),
        (
            &[
                "sh",
                "-c",
                "test -s /proc/kcore || head -c 1 /proc/kcore | grep -q .",
            ],
            "/proc/kcore",
        ),
    ];
    for (cmd, what) in cases {
        let (code, out, err) = engine.run(cmd, host());
        assert_ne!(code, 0, "{what} was allowed: {out}{err}");
    }
    // It sees its own processes only.
    let (code, out, _) = engine.run(
        &["sh", "-c", "ls -d /proc/[0-9]* | wc -l"],
        HostConfig::default(),
    );
    assert_eq!(code, 0);
    let count: u32 = out.trim().parse().unwrap();
    assert!(count <= 3, "the container sees {count} processes");
    // With CAP_SYS_ADMIN added the same probe is allowed: the test can fail.
    let admin = HostConfig {
        cap_add: vec!["SYS_ADMIN".into()],
        ..host()
    };
    let (code, out, err) = engine.run(&["/probe", "unshare"], admin);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_memory_hog_is_oom_killed() {
    let engine = Engine::new();
    let id = engine.create(
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        HostConfig {
            memory: 32 << 20,
            memory_swap: 32 << 20,
            ..HostConfig::default()
        },
    );
    let (code, _, _) = engine.run_id(&id);
    assert_eq!(code, 137);
    let state = engine.rt().state(&id).unwrap();
    assert!(state.oom_killed, "{state:?}");
    assert_eq!(state.status, StateName::Exited);
    engine.rt().remove(&id, false).unwrap();
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    let engine = Engine::new();
    let (_, out, err) = engine.run(
        &[
            "sh",
            "-c",
            "for i in $(seq 100); do sleep 2 & done; wait; echo done",
        ],
        HostConfig {
            pids_limit: Some(20),
            ..HostConfig::default()
        },
    );
    assert!(err.contains("can't fork"), "{out}{err}");
    // The host is fine.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn the_container_outlives_an_engine_restart() {
    let mut engine = Engine::new();
    let id = engine.create(
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; while true; do echo tick; sleep 0.1; done",
        ],
        HostConfig::default(),
    );
    engine.rt().start(&id, &[]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let pid = engine.rt().state(&id).unwrap().pid;

    engine.restart();
    let state = engine.rt().state(&id).unwrap();
    assert_eq!(state.status, StateName::Running);
    assert_eq!(state.pid, pid);
    let log = engine.rt().log_path(&id);
    let before = std::fs::metadata(&log).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::metadata(&log).unwrap().len() > before,
        "the log stopped growing"
    );

    let status = engine.rt().stop(&id, Duration::from_secs(10)).unwrap();
    assert_eq!(status.exit_code, 3);
    assert_eq!(engine.rt().wait(&id).unwrap().exit_code, 3);
    assert_eq!(engine.rt().state(&id).unwrap().status, StateName::Exited);
}

#[test]
fn exec_runs_confined_in_the_running_container() {
    let engine = Engine::new();
    let id = engine.create(&["sleep", "60"], HostConfig::default());
    engine.rt().start(&id, &[]).unwrap();
    let exec = |args: &[&str], exec_id: &str| {
        let request = ExecRequest {
            id: exec_id.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["GREETING=hi".into()],
            user: String::new(),
            working_dir: String::new(),
            tty: false,
            stdin: false,
            privileged: false,
        };
        let mut stream = engine.rt().exec(&id, &request).unwrap();
        let (out, err) = demux_all(&mut stream);
        let exit = engine.rt().exec_exit(&id, exec_id).unwrap();
        (exit.exit_code, out, err)
    };
    let (code, out, _) = exec(&["sh", "-c", "echo $GREETING; id -u; exit 7"], "e1");
    assert_eq!((code, out.as_str()), (7, "hi\n0\n"));

    // Seen from the host, an exec'd process is the remapped uid too, and
    // the namespaces are the container's.
    let request = ExecRequest {
        id: "e2".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat /proc/self/status; readlink /proc/self/ns/pid; sleep 1".into(),
        ],
        env: vec![],
        user: String::new(),
        working_dir: String::new(),
        tty: false,
        stdin: false,
        privileged: false,
    };
    let init = engine.rt().state(&id).unwrap().pid;
    let mut stream = engine.rt().exec(&id, &request).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/moat-test/{id}/cgroup.procs"))
        .unwrap();
    let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        pids.len() >= 2,
        "the exec'd process joined the cgroup: {pids:?}"
    );
    for pid in pids {
        let uid = host_status_uid(pid);
        assert!(
            uid.contains(&engine.map.uid.to_string()),
            "pid {pid}: {uid}"
        );
    }
    let (out, _) = demux_all(&mut stream);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let container_pidns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    assert!(out.contains(container_pidns.to_str().unwrap()), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");

    let (code, _, err) = exec(&["no-such-program"], "e3");
    assert_eq!(code, 127);
    assert!(err.contains("executable file not found"), "{err}");
    engine.rt().remove(&id, true).unwrap();
}

#[test]
fn nothing_is_left_after_remove() {
    let engine = Engine::new();
    let id = engine.create(
        &["sleep", "60"],
        HostConfig {
            memory: 64 << 20,
            ..HostConfig::default()
        },
    );
    engine.rt().start(&id, &[]).unwrap();
    let cgroup_dirs = || -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("moat-test").join(&id))
            .filter(|p| p.exists())
            .collect()
    };
    assert!(
        !cgroup_dirs().is_empty(),
        "the container has cgroups while it runs"
    );
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts().contains(&id),
        "the rootfs is mounted in the shim's namespace only"
    );
    engine.rt().remove(&id, true).unwrap();
    assert!(cgroup_dirs().is_empty(), "{:?}", cgroup_dirs());
    assert!(!mounts().contains(&id));
    assert!(!engine.run_root.join(&id).exists());
    assert!(engine.rt().record(&id).is_err());
}

#[test]
fn configurations_that_cannot_run_fail_cleanly() {
    let engine = Engine::new();
    let containers = engine.config.state_root.join("containers");
    let count = || std::fs::read_dir(&containers).unwrap().count();

    let bad = [
        HostConfig {
            memory: 1024,
            ..HostConfig::default()
        },
        HostConfig {
            binds: vec!["/no/such/dir:/x".into()],
            ..HostConfig::default()
        },
        HostConfig {
            cap_add: vec!["NOT_A_CAP".into()],
            ..HostConfig::default()
        },
    ];
    for host in bad {
        let err = engine
            .rt()
            .create(CreateRequest {
                name: None,
                config: ContainerConfig {
                    cmd: vec!["true".into()],
                    host_config: host,
                    ..Default::default()
                },
                image: "busybox:test".into(),
                image_id: String::new(),
                layers: vec![engine.layer.clone()],
            })
            .unwrap_err();
        assert!(err.to_string().contains("HostConfig."), "{err}");
        assert_eq!(count(), 0, "a refused create left files");
    }
    let err = engine
        .rt()
        .create(CreateRequest {
            name: None,
            config: ContainerConfig {
                cmd: vec!["true".into()],
                ..Default::default()
            },
            image: "x".into(),
            image_id: String::new(),
            layers: vec![PathBuf::from("/no/such/layer")],
        })
        .unwrap_err();
    assert!(err.to_string().contains("layer"), "{err}");

    // A missing binary or user fails at start, naming it; the container
    // records the failure and nothing runs.
    let id = engine.create(&["/bin/no-such-binary"], HostConfig::default());
    let err = engine.rt().start(&id, &[]).unwrap_err();
    assert!(err.to_string().contains("no-such-binary"), "{err}");
    assert_eq!(engine.rt().state(&id).unwrap().exit_code, 127);
    assert!(!engine.run_root.join(&id).join("control.sock").exists());
    engine.rt().remove(&id, false).unwrap();

    let id = engine.create_with(ContainerConfig {
        cmd: vec!["true".into()],
        user: "ghost".into(),
        ..Default::default()
    });
    let err = engine.rt().start(&id, &[]).unwrap_err();
    assert!(
        err.to_string().contains("unable to find user ghost"),
        "{err}"
    );
    engine.rt().remove(&id, false).unwrap();
}

#[test]
fn a_half_created_container_is_gone_after_restart() {
    let mut engine = Engine::new();
    let half = engine.config.state_root.join("containers/.creating-0123");
    std::fs::create_dir_all(half.join("upper")).unwrap();
    engine.restart();
    assert!(!half.exists());
}

#[test]
fn users_stop_signals_and_tty() {
    let engine = Engine::new();
    let (code, out, _) = engine.run_with(ContainerConfig {
        cmd: vec!["id".into()],
        user: "app".into(),
        ..Default::default()
    });
    assert_eq!(code, 0);
    assert!(
        out.starts_with("uid=1000(app) gid=1000(app) groups="),
        "{out}"
    );
    assert!(
        out.contains("50(staff)") && out.contains("1000(app)"),
        "{out}"
    );
    let (code, out, _) = engine.run_with(ContainerConfig {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "grep CapEff /proc/self/status".into(),
        ],
        user: "app".into(),
        ..Default::default()
    });
    assert_eq!(code, 0);
    assert!(
        out.contains("0000000000000000"),
        "a non-root user has no capabilities: {out}"
    );

    // With a TTY the output is raw and the process has a terminal.
    let id = engine.create_with(ContainerConfig {
        cmd: vec!["sh".into(), "-c".into(), "tty; echo out".into()],
        tty: true,
        ..Default::default()
    });
    let header = AttachHeader {
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let mut streams = engine.rt().start(&id, &[header]).unwrap();
    let mut raw = Vec::new();
    streams[0].read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("/dev/pts/0") && text.contains("out"),
        "{text}"
    );
    assert_eq!(engine.rt().wait(&id).unwrap().exit_code, 0);
}

impl Engine {
    fn run_with(&self, config: ContainerConfig) -> (i32, String, String) {
        let id = self.create_with(config);
        let result = self.run_id(&id);
        self.rt().remove(&id, true).unwrap();
        result
    }
}

#[test]
fn pause_restart_stdin_volumes_and_init() {
    use std::io::Write;
    let engine = Engine::new();

    // Pause freezes the container; unpause thaws it.
    let id = engine.create(&["sleep", "60"], HostConfig::default());
    engine.rt().start(&id, &[]).unwrap();
    engine.rt().pause(&id).unwrap();
    assert_eq!(engine.rt().state(&id).unwrap().status, StateName::Paused);
    let freezer = format!("/sys/fs/cgroup/freezer/moat-test/{id}/freezer.state");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    engine.rt().unpause(&id).unwrap();
    assert_eq!(engine.rt().state(&id).unwrap().status, StateName::Running);

    // Restart gives a new process and counts the restart.
    let before = engine.rt().state(&id).unwrap().pid;
    engine.rt().restart(&id, Duration::from_secs(1)).unwrap();
    let after = engine.rt().state(&id).unwrap();
    assert_eq!(after.status, StateName::Running);
    assert_ne!(after.pid, before);
    assert_eq!(engine.rt().record(&id).unwrap().restart_count, 1);
    engine.rt().remove(&id, true).unwrap();

    // Stdin reaches the container, and its end ends `cat`.
    let id = engine.create_with(ContainerConfig {
        cmd: vec!["cat".into()],
        open_stdin: true,
        stdin_once: true,
        ..Default::default()
    });
    let header = AttachHeader {
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let mut streams = engine.rt().start(&id, &[header]).unwrap();
    streams[0].write_all(b"piped through\n").unwrap();
    streams[0].shutdown(std::net::Shutdown::Write).unwrap();
    let (out, _) = demux_all(&mut streams[0]);
    assert_eq!(out, "piped through\n");
    assert_eq!(engine.rt().wait(&id).unwrap().exit_code, 0);
    engine.rt().remove(&id, false).unwrap();

    // A named volume outlives the container that wrote to it.
    let host = || HostConfig {
        binds: vec!["cache:/cache".into()],
        ..HostConfig::default()
    };
    let (code, _, err) = engine.run(&["sh", "-c", "echo kept > /cache/f"], host());
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = engine.run(&["cat", "/cache/f"], host());
    assert_eq!((code, out.as_str()), (0, "kept\n"));

    // --init runs docker-init as PID 1 in front of the command.
    let (code, out, err) = engine.run(
        &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"],
        HostConfig {
            init: Some(true),
            ..HostConfig::default()
        },
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("/sbin/docker-init -- sh"), "{out}");
}

#[test]
fn read_only_rootfs_and_auto_remove() {
    let engine = Engine::new();
    let (code, _, err) = engine.run(
        &["touch", "/made"],
        HostConfig {
            readonly_rootfs: true,
            ..HostConfig::default()
        },
    );
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // /tmp-like tmpfs mounts stay writable.
    let mut tmpfs = std::collections::BTreeMap::new();
    tmpfs.insert("/scratch".to_owned(), "size=1m".to_owned());
    let (code, _, err) = engine.run(
        &["touch", "/scratch/ok"],
        HostConfig {
            readonly_rootfs: true,
            tmpfs,
            ..HostConfig::default()
        },
    );
    assert_eq!(code, 0, "{err}");

    let id = engine.create(
        &["true"],
        HostConfig {
            auto_remove: true,
            ..HostConfig::default()
        },
    );
    engine.rt().start(&id, &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.rt().record(&id).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container was not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
