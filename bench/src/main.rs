//! moat's benchmark harness. Each scenario runs moat and its peers
//! interleaved (A B A B ...) on the same machine in the same run, and
//! reports medians, p50/p99 and the median of the per-pair ratios: on a
//! shared, noisy machine only ratios from one run mean anything.
//!
//! `moat-bench [--runs N] [--json FILE] [--moat PATH] [SCENARIO...]`
//!
//! Scenarios:
//! - `lifecycle`: create, start, wait and remove a `/bin/true` container
//!   through the engine's runtime, against `runc run` and `crun run` on a
//!   bundle made from the same OCI spec and the same busybox root.
//! - `cli`: `docker run --rm busybox:test true` with the real CLI, and
//!   `GET /containers/json` with 100 containers, against dockerd and
//!   Podman's API service, each on its Unix socket; and the same `docker
//!   run` over mutual TLS, moat through `moat gateway` against dockerd's
//!   `--tlsverify` listener.
//! - `audit`: durably audited appends per second with 1, 16, 64 and 256
//!   concurrent clients (group commit), against one fsync per record; the
//!   log is verified and its records counted afterwards.
//! - `proxy`: the latency `moat gateway` adds to `GET /_ping` and `GET
//!   /containers/json` on one kept-alive mutual-TLS connection, against
//!   the engine's socket directly and nginx terminating the same mTLS.
//! - `handshake`: full (and resumed) mTLS handshakes per second and per
//!   core of the server, the gateway against nginx.
//! - `policy`: `moat_policy::Enforcer` decisions per second per core and
//!   their latency, 1000 users in 10 roles, cached and first-time.
//! - `gateway-audit`: durably audited calls per second through the real
//!   gateway with 8, 32 and 64 connections, every audit record counted.
//! - `registry`: push and pull of a 100 MiB, 4-layer image of random bytes
//!   to and from a local `docker-registry`, moat (docker CLI) against
//!   `skopeo copy` and dockerd; held to 1.2x of skopeo.
//! - `rebuild`: a no-change `DOCKER_BUILDKIT=0 docker build` of a small
//!   multi-stage Dockerfile (every step cached) against dockerd's classic
//!   builder, and the first, uncached build of each.
//! - `memory`: resident memory (PSS, and RSS) of moat's engine, gateway and
//!   shims against dockerd, containerd and its shims, idle and with 100
//!   running containers; the ratios and the cost per container.
//! - `concurrent`: `docker run -d busybox:test sleep 60` ten times in
//!   parallel through the CLI, until all ten run, against dockerd: on the
//!   Unix sockets, and over mutual TLS (the gateway against dockerd's
//!   `--tlsverify` listener).
//! - `image`: `docker load`, `docker save` of a 100 MiB, 4-layer image of
//!   random bytes and `docker import` of a 100 MiB rootfs tar, against
//!   dockerd and Podman's API service, every run checked.

mod audit;
mod cli_run;
mod concurrent;
mod gateway_audit;
mod handshake;
mod images;
mod lifecycle;
mod memory;
mod mtls;
mod policy;
mod proxy;
mod stack;
mod stats;

use std::path::PathBuf;

pub struct Options {
    pub runs: usize,
    pub moat: PathBuf,
    pub work: PathBuf,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(lifecycle::CRUN_WORKER) {
        lifecycle::crun_worker();
        return;
    }
    let mut options = Options {
        runs: 30,
        moat: PathBuf::from("target/release/moat"),
        work: PathBuf::from("/var/tmp/moat-bench"),
    };
    let mut json_out: Option<PathBuf> = None;
    let mut scenarios = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => options.runs = it.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--json" => json_out = it.next().map(PathBuf::from),
            "--moat" => options.moat = it.next().map(PathBuf::from).expect("--moat PATH"),
            "--work" => options.work = it.next().map(PathBuf::from).expect("--work DIR"),
            "-h" | "--help" => {
                println!(
                    "usage: moat-bench [--runs N] [--json FILE] [--moat PATH] [--work DIR] [lifecycle] [cli] [audit] [proxy] [handshake] [policy] [gateway-audit] [registry] [rebuild] [memory] [concurrent] [image]"
                );
                return;
            }
            other => scenarios.push(other.to_owned()),
        }
    }
    if scenarios.is_empty() {
        scenarios.push("lifecycle".into());
        scenarios.push("cli".into());
        scenarios.push("audit".into());
        scenarios.extend(
            [
                "proxy",
                "handshake",
                "policy",
                "gateway-audit",
                "registry",
                "rebuild",
                "memory",
                "concurrent",
                "image",
            ]
            .map(String::from),
        );
    }
    // The audit scenario runs in this process; the others start `moat`.
    if scenarios.iter().any(|s| s != "audit") {
        let moat = std::fs::canonicalize(&options.moat).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it: cargo build --release -p moat)",
                options.moat.display()
            )
        });
        options.moat = moat;
    }

    let mut rows = Vec::new();
    let mut figures = Vec::new();
    for scenario in &scenarios {
        match scenario.as_str() {
            "lifecycle" => rows.extend(lifecycle::run(&options)),
            "cli" => rows.extend(cli_run::run(&options)),
            "audit" => rows.extend(audit::run(&options)),
            "proxy" => rows.extend(proxy::run(&options, &mut figures)),
            "handshake" => rows.extend(handshake::run(&options, &mut figures)),
            "policy" => figures.extend(policy::run(&options)),
            "gateway-audit" => rows.extend(gateway_audit::run(&options, &mut figures)),
            "registry" => rows.extend(images::registry(&options, &mut figures)),
            "rebuild" => rows.extend(images::rebuild(&options)),
            "memory" => figures.extend(memory::run(&options)),
            "concurrent" => rows.extend(concurrent::run(&options)),
            "image" => rows.extend(images::archive(&options)),
            other => {
                eprintln!("unknown scenario {other:?}");
                std::process::exit(2);
            }
        }
    }
    println!();
    if !rows.is_empty() {
        println!("{}", stats::table(&rows));
    }
    if !figures.is_empty() {
        println!();
        println!("{}", stats::figure_table(&figures));
    }
    if let Some(path) = json_out {
        let json = serde_json::to_string_pretty(&stats::json(&rows, &figures)).expect("serializes");
        std::fs::write(&path, json + "\n").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("JSON written to {}", path.display());
    }
}
