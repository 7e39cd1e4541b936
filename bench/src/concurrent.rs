//! Ten containers started at once: `docker run -d busybox:test sleep 60`
//! ten times in parallel through the real docker CLI, timed until every
//! one has returned (`run -d` returns once its container is running),
//! moat's engine against dockerd (vfs, `--userns-remap=default`), each on
//! its own Unix socket; and the same burst over mutual TLS on loopback,
//! moat through `moat gateway` against dockerd's `--tlsverify` listener
//! (same CA, server certificate and client bundle). The ten are removed
//! between runs, outside the timing.

use std::time::{Duration, Instant};

use crate::Options;
use crate::cli_run::{self, DOCKERD, DOCKERD_TLS, Host, Pair, docker_ok};
use crate::stack::Stack;
use crate::stats::Row;

const PARALLEL: usize = 10;
const RUN: [&str; 5] = ["run", "-d", "busybox:test", "sleep", "60"];

/// Starts `PARALLEL` containers at once; the time until all are running.
fn burst(host: Host) -> Duration {
    let start = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..PARALLEL)
            .map(|_| s.spawn(|| cli_run::docker(host, &RUN)))
            .collect();
        runs.into_iter()
            .map(|r| {
                let out = r.join().expect("docker run thread");
                assert!(
                    out.status.success(),
                    "docker run on {host}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let running = docker_ok(host, &["ps", "-q", "--filter", "status=running"]);
    assert!(
        running.lines().count() >= PARALLEL,
        "{} running on {host} after the burst",
        running.lines().count(),
    );
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker_ok(host, &rm);
    elapsed
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
    let Some((dockerd, tls)) = cli_run::dockerd_tls(&work, "conc-dockerd", &stack.pki()) else {
        return Vec::new();
    };
    docker_ok(
        &dockerd.socket,
        &["import", tar.to_str().expect("utf-8 path"), "busybox:test"],
    );

    let pairs = vec![
        Pair {
            scenario: format!("{PARALLEL} concurrent run -d"),
            peer: DOCKERD,
            moat: Host::Unix(&stack.engine_socket),
            other: Host::Unix(&dockerd.socket),
        },
        Pair {
            scenario: format!("{PARALLEL} concurrent run -d (gateway mTLS)"),
            peer: DOCKERD_TLS,
            moat: Host::Tls(stack.gateway_addr, &stack.bundle),
            other: Host::Tls(tls, &stack.bundle),
        },
    ];
    let rows = cli_run::interleave(
        &format!("{PARALLEL} concurrent docker run -d"),
        options.runs,
        pairs,
        burst,
    );
    drop(dockerd);
    drop(stack);
    rows
}
