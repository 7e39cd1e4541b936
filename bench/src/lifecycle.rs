//! Container lifecycle without a CLI: create, start, wait and remove a
//! `/bin/true` container through moat's engine runtime, against `runc run`
//! and `crun run` on a bundle whose `config.json` comes from the same OCI
//! spec moat builds (user namespace, seccomp, capabilities, cgroups) and
//! whose root is the same busybox tree.
//!
//! crun 1.8 refuses this host's hybrid cgroup layout, so it runs in a
//! worker process with a private mount namespace where the cgroup v2 mount
//! is unmounted; that process is set up once, outside the timed part.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_api::container::ContainerConfig;
use moat_engine::runtime::{CreateRequest, Runtime, RuntimeConfig};
use moat_engine::spec::{self, SpecContext};
use moat_engine::userns::{self, IdMap};

use crate::Options;
use crate::stats::Row;

pub const CRUN_WORKER: &str = "--crun-worker";
const RUN_ROOT: &str = "/run/moat-bench";

pub fn run(options: &Options) -> Vec<Row> {
    let work = &options.work;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).expect("work dir");
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o711)).expect("chmod work dir");
    let map = IdMap::for_remap_user().expect("subordinate ids for the moat user");

    let layer = work.join("layer");
    moat_engine::busybox::write_rootfs(&layer).expect("busybox rootfs");
    userns::shift_ownership(&layer, &map).expect("shift ownership");

    let runtime = Runtime::open(RuntimeConfig {
        state_root: work.join("moat"),
        run_root: PathBuf::from(RUN_ROOT),
        shim_binary: options.moat.clone(),
        id_map: map,
        cgroup_parent: "/moat-bench".into(),
        log_max_size: 0,
        log_max_files: 1,
        remove_on_exit: true,
    })
    .expect("engine runtime");
    let config = ContainerConfig {
        cmd: vec!["/bin/true".into()],
        ..ContainerConfig::default()
    };
    let bundle = make_bundle(work, &layer, &config, map);

    let mut runc = Vec::new();
    let mut crun = Vec::new();
    let mut moat_vs_runc = Vec::new();
    let mut moat_vs_crun = Vec::new();
    let has_runc = which("runc");
    let mut crun_worker = which("crun").then(|| CrunWorker::start(&bundle));

    // One of each, untimed, to warm caches.
    moat_once(&runtime, &config, &layer);
    if has_runc {
        runc_once(&bundle, 0);
    }
    if let Some(w) = &mut crun_worker {
        w.run(0);
    }
    eprint!("lifecycle: {} runs ", options.runs);
    for i in 1..=options.runs {
        if has_runc {
            moat_vs_runc.push(moat_once(&runtime, &config, &layer));
            runc.push(runc_once(&bundle, i));
        }
        if let Some(w) = &mut crun_worker {
            moat_vs_crun.push(moat_once(&runtime, &config, &layer));
            crun.push(w.run(i));
        }
        eprint!(".");
    }
    eprintln!();
    let mut rows = Vec::new();
    if has_runc {
        rows.push(Row {
            scenario: "lifecycle".into(),
            peer: "runc run".into(),
            moat: moat_vs_runc,
            other: runc,
        });
    } else {
        eprintln!("runc is not installed: no runc row (bench/run.sh installs it)");
    }
    if crun_worker.is_some() {
        rows.push(Row {
            scenario: "lifecycle".into(),
            peer: "crun run (private mnt ns)".into(),
            moat: moat_vs_crun,
            other: crun,
        });
    } else {
        eprintln!("crun is not installed: no crun row (bench/run.sh installs it)");
    }
    rows
}

fn moat_once(runtime: &Runtime, config: &ContainerConfig, layer: &Path) -> Duration {
    let start = Instant::now();
    let record = runtime
        .create(CreateRequest {
            name: None,
            config: config.clone(),
            image: "busybox".into(),
            image_id: String::new(),
            layers: vec![layer.to_path_buf()],
        })
        .expect("create");
    runtime.start(&record.id, &[]).expect("start");
    let status = runtime.wait(&record.id).expect("wait");
    runtime.remove(&record.id, false).expect("remove");
    let elapsed = start.elapsed();
    assert_eq!(
        status.exit_code, 0,
        "moat: /bin/true failed: {}",
        status.error
    );
    elapsed
}

fn runc_once(bundle: &Path, i: usize) -> Duration {
    let start = Instant::now();
    let status = Command::new("runc")
        .args(["--root", "/run/moat-bench-runc", "run", "--bundle"])
        .arg(bundle)
        .arg(format!("bench-runc-{i}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("runc");
    let elapsed = start.elapsed();
    assert!(status.success(), "runc run failed");
    elapsed
}

/// The same spec moat would run, as a bundle for runc and crun: the root is
/// a copy of the busybox layer (a plain directory; runc and crun do no
/// overlay), the /etc files sit beside it.
fn make_bundle(work: &Path, layer: &Path, config: &ContainerConfig, map: IdMap) -> PathBuf {
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(layer)
        .arg(bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(status.success());
    let spec = spec::build(
        config,
        &SpecContext {
            id: "bench",
            dir: &bundle,
            rootfs: &bundle.join("rootfs"),
            id_map: map,
            volumes: &work.join("volumes"),
            cgroup_parent: "/moat-bench-peer",
        },
    )
    .expect("spec");
    for (file, content) in [
        ("hostname", "bench\n"),
        ("hosts", "127.0.0.1\tlocalhost bench\n"),
        ("resolv.conf", ""),
    ] {
        let path = bundle.join(file);
        std::fs::write(&path, content).unwrap();
        std::os::unix::fs::lchown(&path, Some(map.uid), Some(map.gid)).unwrap();
    }
    spec.save(bundle.join("config.json")).expect("config.json");
    bundle
}

/// A process that runs `crun run` on request, from inside a private mount
/// namespace without the cgroup v2 mount.
struct CrunWorker {
    child: std::process::Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl CrunWorker {
    fn start(bundle: &Path) -> CrunWorker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(CRUN_WORKER)
            .arg(bundle)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("crun worker");
        let lines = BufReader::new(child.stdout.take().unwrap());
        CrunWorker { child, lines }
    }

    fn run(&mut self, i: usize) -> Duration {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{i}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        let micros: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("crun worker: {line:?}"));
        Duration::from_micros(micros)
    }
}

impl Drop for CrunWorker {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The worker's side: set up the namespace once, then time each `crun run`.
pub fn crun_worker() {
    use nix::mount::{MntFlags, umount2};
    let bundle = std::env::args().nth(2).expect("bundle");
    moat_engine::shim::rootfs::private_mount_namespace().expect("a private mount namespace");
    let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let i = line.unwrap();
        let start = Instant::now();
        let status = Command::new("crun")
            .args(["--root", "/run/moat-bench-crun", "run", "--bundle", &bundle])
            .arg(format!("bench-crun-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("crun");
        let micros = start.elapsed().as_micros();
        if !status.success() {
            eprintln!("crun run failed ({status})");
            std::process::exit(1);
        }
        writeln!(out, "{micros}").unwrap();
        out.flush().unwrap();
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
