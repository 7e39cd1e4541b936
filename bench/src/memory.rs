//! Resident memory of each side, idle and with 100 running `sleep`
//! containers: moat's engine, gateway and every per-container shim
//! against dockerd, its containerd and every containerd-shim. Each
//! process counts its proportional set size (`Pss` in
//! `/proc/PID/smaps_rollup`: a page shared by N processes counts 1/N to
//! each), so the sum over a side is the memory that side holds; RSS is
//! summed too and shown beside it. The containers' own processes are
//! left out of both sides.

use std::path::Path;
use std::time::Duration;

use crate::Options;
use crate::cli_run;
use crate::stack::Stack;
use crate::stats::Figure;

const CONTAINERS: usize = 100;

/// The memory of a set of processes, in KiB.
#[derive(Clone, Copy, Default)]
struct Footprint {
    processes: usize,
    pss_kib: u64,
    rss_kib: u64,
}

impl Footprint {
    fn add(&mut self, pid: i32) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            return;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.processes += 1;
        self.pss_kib += field("Pss:");
        self.rss_kib += field("Rss:");
    }

    fn pss_mib(&self) -> f64 {
        self.pss_kib as f64 / 1024.0
    }

    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

struct Process {
    pid: i32,
    parent: i32,
    /// The executable's file name (` (deleted)` removed).
    exe: String,
    cmdline: String,
    stderr: String,
}

fn processes() -> Vec<Process> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy();
        let exe = exe.trim_end_matches(" (deleted)");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        all.push(Process {
            pid,
            parent,
            exe: exe.rsplit('/').next().unwrap_or_default().to_owned(),
            cmdline,
            stderr,
        });
    }
    all
}

/// A side's processes, by role: the daemon, its helper (the gateway;
/// containerd) and the per-container shims.
#[derive(Clone, Copy, Default)]
struct Side {
    daemon: Footprint,
    helper: Footprint,
    shims: Footprint,
}

impl Side {
    fn total(&self) -> Footprint {
        let parts = [self.daemon, self.helper, self.shims];
        Footprint {
            processes: parts.iter().map(|f| f.processes).sum(),
            pss_kib: parts.iter().map(|f| f.pss_kib).sum(),
            rss_kib: parts.iter().map(|f| f.rss_kib).sum(),
        }
    }
}

/// moat's processes for this stack: the engine, the gateway, the spare
/// shim (the engine's child) and every shim, which writes its stderr to
/// `shim.log` in the container's directory under the stack's.
fn moat_side(stack: &Stack) -> Side {
    let engine = stack.engine.pid();
    let gateway = stack.gateway.pid();
    let dir = stack.dir.to_string_lossy().into_owned();
    let mut side = Side::default();
    for p in processes() {
        if p.pid == engine {
            side.daemon.add(p.pid);
        } else if p.pid == gateway {
            side.helper.add(p.pid);
        } else if p.exe == "moat" && (p.parent == engine || p.stderr.starts_with(&dir)) {
            side.shims.add(p.pid);
        }
    }
    side
}

/// dockerd, the containerd it started and every containerd-shim: each
/// names the exec root in its command line (the shims through
/// containerd's socket).
fn dockerd_side(exec_root: &str) -> Side {
    let mut side = Side::default();
    for p in processes().iter().filter(|p| p.cmdline.contains(exec_root)) {
        if p.exe == "dockerd" {
            side.daemon.add(p.pid);
        } else if p.exe == "containerd" {
            side.helper.add(p.pid);
        } else if p.exe.starts_with("containerd-shim") {
            side.shims.add(p.pid);
        }
    }
    side
}

/// The median (by PSS) of three samples a second apart, after the side
/// has settled for two seconds.
fn settled(measure: impl Fn() -> Side) -> Side {
    std::thread::sleep(Duration::from_secs(2));
    let mut samples: Vec<Side> = (0..3)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            measure()
        })
        .collect();
    samples.sort_by_key(|f| f.total().pss_kib);
    samples[1]
}

/// The PSS of each role of a side, as figures.
fn roles(figures: &mut Vec<Figure>, state: &str, roles: [&str; 3], s: &Side) {
    let sides = ["", "", if roles == MOAT { "moat " } else { "dockerd " }];
    for ((side, role), f) in sides.iter().zip(roles).zip([s.daemon, s.helper, s.shims]) {
        if f.processes == 0 {
            continue;
        }
        let name = format!("{side}{role} {state} ({}), PSS", f.processes);
        figures.push(Figure::new("memory", name, f.pss_mib(), "MiB"));
    }
}

/// Prints a side's sample by role; its total for the figures.
fn report(side: &str, state: &str, roles: [&str; 3], s: &Side) -> Footprint {
    let total = s.total();
    let part = |name: &str, f: &Footprint| {
        format!(
            "{name} {} × {:.1} MiB ({:.1} RSS)",
            f.processes,
            f.pss_mib(),
            f.rss_mib()
        )
    };
    eprintln!(
        "memory: {side} {state}: PSS {:.1} MiB, RSS {:.1} MiB: {}; {}; {}",
        total.pss_mib(),
        total.rss_mib(),
        part(roles[0], &s.daemon),
        part(roles[1], &s.helper),
        part(roles[2], &s.shims),
    );
    total
}

const MOAT: [&str; 3] = ["engine", "gateway", "shims"];
const PEER: [&str; 3] = ["dockerd", "containerd", "shims"];

pub fn run(options: &Options) -> Vec<Figure> {
    eprintln!("memory: moat engine + gateway, idle, then {CONTAINERS} containers");
    let mut stack = Stack::start(options, "memory", &["--user-rate", "0"]);
    stack.run_containers(0);
    let moat_idle_roles = settled(|| moat_side(&stack));
    let moat_idle = report("moat", "idle", MOAT, &moat_idle_roles);
    stack.run_containers(CONTAINERS);
    let moat_busy_roles = settled(|| moat_side(&stack));
    let moat_busy = report("moat", "busy", MOAT, &moat_busy_roles);
    drop(stack);

    let mut figures = Vec::new();
    roles(&mut figures, "idle", MOAT, &moat_idle_roles);
    roles(&mut figures, "busy", MOAT, &moat_busy_roles);
    let mib = |name: String, f: &Footprint| Figure::new("memory", name, f.pss_mib(), "MiB");
    figures.push(mib("moat idle, PSS".into(), &moat_idle));
    figures.push(mib(
        format!("moat {CONTAINERS} containers, PSS"),
        &moat_busy,
    ));
    figures.push(Figure::new(
        "memory",
        "moat per container, PSS",
        (moat_busy.pss_mib() - moat_idle.pss_mib()) / CONTAINERS as f64,
        "MiB",
    ));
    figures.push(Figure::new(
        "memory",
        format!("moat {CONTAINERS} containers, RSS"),
        moat_busy.rss_mib(),
        "MiB",
    ));

    if !cli_run::which("dockerd") {
        eprintln!("dockerd is not installed: no dockerd figures (bench/run.sh installs docker.io)");
        return figures;
    }
    let work = options.work.join("memory-peer");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let tar = cli_run::busybox_tar(&work);
    let Some(dockerd) = cli_run::dockerd(&work, "mem-dockerd") else {
        return figures;
    };
    let exec_root = "/run/moat-bench-mem-dockerd";
    let docker = |args: &[&str]| {
        let out = cli_run::docker(&dockerd.socket, args);
        assert!(
            out.status.success(),
            "docker {args:?} on dockerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    docker(&["import", path(&tar), "busybox:test"]);
    let peer_idle_roles = settled(|| dockerd_side(exec_root));
    let peer_idle = report("dockerd", "idle", PEER, &peer_idle_roles);
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|_| docker(&crate::stack::LONG_RUNNING))
        .collect();
    let peer_busy_roles = settled(|| dockerd_side(exec_root));
    let peer_busy = report("dockerd", "busy", PEER, &peer_busy_roles);
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker(&rm);
    drop(dockerd);

    roles(&mut figures, "idle", PEER, &peer_idle_roles);
    roles(&mut figures, "busy", PEER, &peer_busy_roles);
    let peer = |name: &str| format!("dockerd {name}");
    figures.push(mib(peer("idle, PSS"), &peer_idle));
    figures.push(mib(
        peer(&format!("{CONTAINERS} containers, PSS")),
        &peer_busy,
    ));
    figures.push(Figure::new(
        "memory",
        peer("per container, PSS"),
        (peer_busy.pss_mib() - peer_idle.pss_mib()) / CONTAINERS as f64,
        "MiB",
    ));
    figures.push(Figure::new(
        "memory",
        peer(&format!("{CONTAINERS} containers, RSS")),
        peer_busy.rss_mib(),
        "MiB",
    ));
    let ratio = |name: &str, a: f64, b: f64| Figure::new("memory", name, a / b, "x");
    figures.push(ratio(
        "moat / dockerd idle, PSS",
        moat_idle.pss_mib(),
        peer_idle.pss_mib(),
    ));
    figures.push(ratio(
        "moat / dockerd with containers, PSS",
        moat_busy.pss_mib(),
        peer_busy.pss_mib(),
    ));
    figures.push(ratio(
        "moat / dockerd per container, PSS",
        moat_busy.pss_mib() - moat_idle.pss_mib(),
        peer_busy.pss_mib() - peer_idle.pss_mib(),
    ));
    figures
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
