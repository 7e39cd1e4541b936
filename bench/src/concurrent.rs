//! Ten containers started at once: `docker run -d busybox:test sleep 60`
//! ten times in parallel through the real docker CLI, timed until every
//! one has returned (`run -d` returns once its container is running),
//! moat's engine against dockerd (vfs, `--userns-remap=default`), each on
//! its own Unix socket. The ten are removed between runs, outside the
//! timing.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::Options;
use crate::cli_run::{self, DOCKERD};
use crate::stack::Stack;
use crate::stats::Row;

const PARALLEL: usize = 10;
const RUN: [&str; 5] = ["run", "-d", "busybox:test", "sleep", "60"];

/// Starts `PARALLEL` containers at once; the time until all are running.
fn burst(socket: &Path) -> Duration {
    let start = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..PARALLEL)
            .map(|_| s.spawn(|| cli_run::docker(socket, &RUN)))
            .collect();
        runs.into_iter()
            .map(|r| {
                let out = r.join().expect("docker run thread");
                assert!(
                    out.status.success(),
                    "docker run on {}: {}",
                    socket.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let running = docker_ok(socket, &["ps", "-q", "--filter", "status=running"]);
    assert!(
        running.lines().count() >= PARALLEL,
        "{} running on {} after the burst",
        running.lines().count(),
        socket.display()
    );
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker_ok(socket, &rm);
    elapsed
}

fn docker_ok(socket: &Path, args: &[&str]) -> String {
    let out = cli_run::docker(socket, args);
    assert!(
        out.status.success(),
        "docker {args:?} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn run(options: &Options) -> Vec<Row> {
    let mut stack = Stack::start(options, "concurrent", &["--user-rate", "0"]);
    stack.run_containers(0);
    if !cli_run::which("dockerd") {
        eprintln!("dockerd is not installed: no concurrent rows (bench/run.sh installs docker.io)");
        return Vec::new();
    }
    let work = options.work.join("concurrent-peer");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let tar = cli_run::busybox_tar(&work);
    let Some(dockerd) = cli_run::dockerd(&work, "conc-dockerd") else {
        return Vec::new();
    };
    docker_ok(
        &dockerd.socket,
        &["import", tar.to_str().expect("utf-8 path"), "busybox:test"],
    );

    // One warm-up burst each, then A B A B.
    burst(&stack.engine_socket);
    burst(&dockerd.socket);
    eprint!(
        "{PARALLEL} concurrent docker run -d: {} runs ",
        options.runs
    );
    let (mut moat, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..options.runs {
        moat.push(burst(&stack.engine_socket));
        peer.push(burst(&dockerd.socket));
        eprint!(".");
    }
    eprintln!();
    drop(dockerd);
    drop(stack);
    vec![Row {
        scenario: format!("{PARALLEL} concurrent run -d"),
        peer: DOCKERD.into(),
        moat,
        other: peer,
    }]
}
