//! Durably audited calls per second through the real gateway: N
//! connections (8, 32, 64), each a client thread making `GET /_ping` on
//! one kept-alive mutual-TLS connection as fast as the answers come, for a
//! fixed time; every answer the gateway gives has its completed record
//! fdatasync'd first (group commit). nginx in front of the same engine
//! (same mTLS, no policy, no audit) is the peer, round by round in turn.
//! Every call is counted, and at the end the gateway is stopped and its
//! audit log read: it must hold exactly one completed record per call
//! made, each with its own audit id, and `moat audit verify` must pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::Options;
use crate::mtls::{self, TlsHttp};
use crate::stack::{self, Stack};
use crate::stats::{Figure, Row};

const CONNECTIONS: [usize; 3] = [8, 32, 64];
const ROUND: Duration = Duration::from_secs(4);
const WARMUP_CALLS: usize = 20;

/// One round against one server.
#[derive(Default)]
struct Round {
    /// Answers received (any status).
    calls: u64,
    /// Answers other than 200.
    refused: u64,
    wall: Duration,
    server_cpu: Duration,
    engine_cpu: Duration,
    client_cpu: Duration,
    /// From the gateway's audit status: records appended, batches written.
    appended: u64,
    commits: u64,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64()
    }

    fn per_call(&self) -> Duration {
        self.wall / self.calls.max(1) as u32
    }

    fn cpu_each_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }
}

/// The gateway's audit writer counters, from `GET /moat/v1/audit/status`
/// (itself an audited call).
fn audit_status(admin: &mut TlsHttp) -> (u64, u64) {
    let response = admin.get("/moat/v1/audit/status").expect("audit status");
    assert_eq!(response.status, 200, "audit status");
    let status: serde_json::Value = serde_json::from_slice(&response.body).expect("status JSON");
    (
        status["appended"].as_u64().unwrap_or(0),
        status["commits"].as_u64().unwrap_or(0),
    )
}

fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, n: usize) -> Vec<TlsHttp> {
    (0..n)
        .map(|_| mtls::tls(addr, config.clone()).expect("connect"))
        .collect()
}

/// Every connection calls `GET /_ping` in its own thread for ROUND.
fn drive(conns: &mut [TlsHttp], cpu: &dyn Fn() -> Duration, engine_pid: i32) -> Round {
    let stop = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(conns.len() + 1);
    let (server_before, engine_before) = (cpu(), stack::cpu_time(engine_pid));
    let client_before = stack::cpu_time(std::process::id() as i32);
    let (counts, wall) = std::thread::scope(|scope| {
        let workers: Vec<_> = conns
            .iter_mut()
            .map(|conn| {
                let (stop, barrier) = (&stop, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let (mut calls, mut refused) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let response = conn.get("/_ping").expect("GET /_ping");
                        calls += 1;
                        refused += u64::from(response.status != 200);
                    }
                    (calls, refused)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(ROUND);
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<(u64, u64)> = workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect();
        (counts, start.elapsed())
    });
    Round {
        calls: counts.iter().map(|c| c.0).sum(),
        refused: counts.iter().map(|c| c.1).sum(),
        wall,
        server_cpu: cpu().saturating_sub(server_before),
        engine_cpu: stack::cpu_time(engine_pid).saturating_sub(engine_before),
        client_cpu: stack::cpu_time(std::process::id() as i32).saturating_sub(client_before),
        ..Round::default()
    }
}

fn median(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(f).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(options: &Options, figures: &mut Vec<Figure>) -> Vec<Row> {
    eprintln!("gateway-audit: starting the engine, the gateway and nginx");
    let mut stack = Stack::start(options, "gateway-audit", &["--user-rate", "0"]);
    stack.start_nginx();
    let client = stack.client(true);
    let (gateway_pid, engine_pid) = (stack.gateway.pid(), stack.engine.pid());
    let gateway_cpu = move || stack::cpu_time(gateway_pid);
    let nginx = stack.nginx.as_ref().map(|n| (n.addr, n.daemon.pid()));
    let mut admin = mtls::tls(stack.gateway_addr, client.clone()).expect("connect to the gateway");
    // Every answer the gateway gave, whatever its status: each must have
    // its completed record.
    let mut made = 0u64;

    let rounds = options.runs.clamp(2, 5);
    let mut rows = Vec::new();
    for n in CONNECTIONS {
        eprint!(
            "gateway-audit: {n} connections, {rounds} rounds of {}s each side ",
            ROUND.as_secs()
        );
        let mut gateway_conns = connect(stack.gateway_addr, &client, n);
        let mut nginx_conns = nginx.map(|(addr, _)| connect(addr, &client, n));
        for conn in gateway_conns
            .iter_mut()
            .chain(nginx_conns.iter_mut().flatten())
        {
            for _ in 0..WARMUP_CALLS {
                assert_eq!(conn.get("/_ping").expect("warm-up call").status, 200);
            }
        }
        made += (n * WARMUP_CALLS) as u64;
        let (mut moat, mut peer) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            for side in [r % 2, 1 - r % 2] {
                match (side, nginx_conns.as_mut(), nginx) {
                    (0, _, _) => {
                        let (appended, commits) = audit_status(&mut admin);
                        let mut round = drive(&mut gateway_conns, &gateway_cpu, engine_pid);
                        let (appended_after, commits_after) = audit_status(&mut admin);
                        made += round.calls + 2;
                        round.appended = appended_after - appended;
                        round.commits = commits_after - commits;
                        moat.push(round);
                    }
                    (_, Some(conns), Some((_, pid))) => {
                        peer.push(drive(conns, &move || stack::tree_cpu_time(pid), engine_pid));
                    }
                    _ => {}
                }
                eprint!(".");
            }
        }
        eprintln!();
        let fig = |name: &str, value: f64, unit: &'static str| {
            Figure::new("gateway-audit", format!("{n} conns: {name}"), value, unit).runs(rounds)
        };
        figures.push(
            fig(
                "gateway audited calls/s",
                median(&moat, Round::per_second),
                "/s",
            )
            .at_least(20_000.0, "20,000"),
        );
        figures.push(fig(
            "gateway CPU per call",
            median(&moat, |r| r.cpu_each_us(r.server_cpu)),
            "µs",
        ));
        figures.push(fig(
            "engine CPU per call",
            median(&moat, |r| r.cpu_each_us(r.engine_cpu)),
            "µs",
        ));
        figures.push(fig(
            "client CPU per call",
            median(&moat, |r| r.cpu_each_us(r.client_cpu)),
            "µs",
        ));
        figures.push(fig(
            "records per fdatasync",
            median(&moat, |r| r.appended as f64 / r.commits.max(1) as f64),
            "",
        ));
        let refused: u64 = moat.iter().map(|r| r.refused).sum();
        if refused > 0 {
            figures
                .push(fig("gateway answers other than 200", refused as f64, "").at_most(0.0, "0"));
        }
        if !peer.is_empty() {
            figures.push(fig(
                "nginx calls/s (no audit)",
                median(&peer, Round::per_second),
                "/s",
            ));
            figures.push(fig(
                "nginx CPU per call",
                median(&peer, |r| r.cpu_each_us(r.server_cpu)),
                "µs",
            ));
            rows.push(Row {
                scenario: format!("gateway-audit {n}"),
                peer: "nginx mTLS, no audit".into(),
                moat: moat.iter().map(Round::per_call).collect(),
                other: peer.iter().map(Round::per_call).collect(),
            });
        }
    }

    // Count: the gateway is stopped first, so every record is on disk.
    drop(admin);
    stack.gateway.stop();
    let records = stack.audit_records();
    let completed: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "event" && r["stage"] == "completed")
        .collect();
    let ids: std::collections::HashSet<&str> = completed
        .iter()
        .filter_map(|r| r["audit_id"].as_str())
        .collect();
    let verified = stack.verify_audit();
    if let Err(reason) = &verified {
        eprintln!("gateway-audit: the audit log does not verify: {reason}");
    }
    eprintln!(
        "gateway-audit: {made} calls made, {} completed records, {} distinct audit ids",
        completed.len(),
        ids.len()
    );
    figures.push(Figure::new(
        "gateway-audit",
        "calls made through the gateway",
        made as f64,
        "",
    ));
    figures.push(
        Figure::new(
            "gateway-audit",
            "calls without exactly one completed record",
            made.abs_diff(ids.len() as u64) as f64 + (completed.len() - ids.len()) as f64,
            "",
        )
        .at_most(0.0, "0"),
    );
    figures.push(
        Figure::new(
            "gateway-audit",
            "moat audit verify failures",
            f64::from(u8::from(verified.is_err())),
            "",
        )
        .at_most(0.0, "0"),
    );
    rows
}
