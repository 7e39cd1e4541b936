//! Mutual-TLS handshakes per second: a fixed number of client threads each
//! open a fresh connection, complete the handshake (ECDSA P-256 client
//! certificate from `moat certs issue`, checked against the CA and the
//! CRL), say goodbye and wait for the server to close, for a fixed time.
//! Full handshakes (the client keeps no session) and resumed ones (the
//! client keeps rustls' default session store, one per server), the
//! gateway and nginx in turn, round by round. Per core = handshakes over
//! the server process's CPU time in the round (`/proc/PID/stat`, nginx's
//! master and workers added up), so the clients sharing the machine do not
//! count against the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, HandshakeKind};

use crate::Options;
use crate::mtls;
use crate::stack::{self, Stack};
use crate::stats::{Figure, Row};

const THREADS: usize = 4;
const ROUND: Duration = Duration::from_secs(3);

/// One server, one kind of handshake: where to connect, how, and the
/// rounds measured.
struct Series {
    server: &'static str,
    resume: bool,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    cpu: Box<dyn Fn() -> Duration>,
    rounds: Vec<Round>,
}

struct Round {
    handshakes: u64,
    resumed: u64,
    failed: u64,
    wall: Duration,
    server_cpu: Duration,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.handshakes as f64 / self.wall.as_secs_f64()
    }

    fn per_core_second(&self) -> f64 {
        self.handshakes as f64 / self.server_cpu.as_secs_f64().max(1e-3)
    }

    /// Server CPU per handshake, for the shared table.
    fn cpu_each(&self) -> Duration {
        self.server_cpu / self.handshakes.max(1) as u32
    }
}

pub fn run(options: &Options, figures: &mut Vec<Figure>) -> Vec<Row> {
    eprintln!("handshake: starting the engine, the gateway and nginx");
    let mut stack = Stack::start(options, "handshake", &["--user-rate", "0"]);
    stack.start_nginx();
    let gateway_pid = stack.gateway.pid();
    let mut series = Vec::new();
    for resume in [false, true] {
        series.push(Series {
            server: "gateway",
            resume,
            addr: stack.gateway_addr,
            config: stack.client(resume),
            cpu: Box::new(move || stack::cpu_time(gateway_pid)),
            rounds: Vec::new(),
        });
        if let Some(nginx) = &stack.nginx {
            let pid = nginx.daemon.pid();
            series.push(Series {
                server: "nginx",
                resume,
                addr: nginx.addr,
                config: stack.client(resume),
                cpu: Box::new(move || stack::tree_cpu_time(pid)),
                rounds: Vec::new(),
            });
        }
    }

    let mut groups = std::collections::BTreeSet::new();
    for s in &series {
        // Warm up, and fill the resuming clients' session stores.
        for _ in 0..50 {
            let h = mtls::handshake(s.addr, &s.config)
                .unwrap_or_else(|e| panic!("handshake with the {}: {e}", s.server));
            if let Some(group) = h.group {
                groups.insert(format!("{} {group:?}", s.server));
            }
        }
    }
    // A resumed session must still carry the caller: the gateway takes the
    // identity from the certificate rustls kept with the session, and a
    // connection without one would be closed right after the handshake.
    for s in series.iter().filter(|s| s.resume) {
        let mut conn = mtls::tls(s.addr, s.config.clone()).expect("resumed connection");
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let status = conn.get("/_ping").map_or(0, |r| r.status);
        eprintln!(
            "handshake: {}: a call on a {} connection answered {status}",
            s.server,
            if resumed {
                "resumed"
            } else {
                "full (not resumed)"
            },
        );
        let mut figure = Figure::new(
            "handshake",
            format!("{} resumed: GET /_ping on a resumed connection", s.server),
            f64::from(status),
            "status",
        );
        figure.target = Some(("200, resumed".into(), resumed && status == 200));
        figures.push(figure);
    }
    eprintln!(
        "handshake: key exchange negotiated: {}",
        groups.into_iter().collect::<Vec<_>>().join(", ")
    );

    let rounds = options.runs.clamp(2, 5);
    eprint!(
        "handshake: {rounds} rounds of {}s per server and kind, {THREADS} client threads ",
        ROUND.as_secs()
    );
    for r in 0..rounds {
        let n = series.len();
        for k in 0..n {
            // Rotate who goes first, so drift does not favour one side.
            let s = &mut series[(r + k) % n];
            let round = measure(s);
            s.rounds.push(round);
            eprint!(".");
        }
    }
    eprintln!();

    let mut rows = Vec::new();
    for resume in [false, true] {
        let kind = if resume { "resumed" } else { "full" };
        let of = |server: &str| {
            series
                .iter()
                .find(|s| s.server == server && s.resume == resume)
        };
        let median_of = |s: &Series, f: fn(&Round) -> f64| {
            let mut v: Vec<f64> = s.rounds.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let gateway = of("gateway").expect("the gateway series");
        let nginx = of("nginx");
        let nginx_core = nginx.map(|s| median_of(s, Round::per_core_second));
        let nginx_rate = nginx.map(|s| median_of(s, Round::per_second));
        for s in std::iter::once(gateway).chain(nginx) {
            let failed: u64 = s.rounds.iter().map(|r| r.failed).sum();
            let total: u64 = s.rounds.iter().map(|r| r.handshakes).sum();
            let resumed: u64 = s.rounds.iter().map(|r| r.resumed).sum();
            let name = |what: &str| format!("{} {kind}: {what}", s.server);
            let mut rate = Figure::new(
                "handshake",
                name("handshakes/s"),
                median_of(s, Round::per_second),
                "/s",
            )
            .runs(s.rounds.len());
            let mut core = Figure::new(
                "handshake",
                name("handshakes/s per server core"),
                median_of(s, Round::per_core_second),
                "/s/core",
            )
            .runs(s.rounds.len());
            if s.server == "gateway" && !resume {
                core = core.at_least(3000.0, "3000");
                if let Some(n) = nginx_core {
                    core = core.and_at_least(n, "nginx");
                }
                if let Some(n) = nginx_rate {
                    rate = rate.at_least(n, "nginx");
                }
            }
            figures.push(rate);
            figures.push(core);
            if resume {
                figures.push(
                    Figure::new(
                        "handshake",
                        name("share actually resumed"),
                        100.0 * resumed as f64 / total.max(1) as f64,
                        "%",
                    )
                    .runs(s.rounds.len()),
                );
            }
            if failed > 0 {
                figures.push(
                    Figure::new("handshake", name("failed handshakes"), failed as f64, "")
                        .at_most(0.0, "0"),
                );
            }
        }
        if let Some(nginx) = nginx {
            rows.push(Row {
                scenario: format!("handshake {kind}"),
                peer: "nginx 1.22 (server CPU each)".into(),
                moat: gateway.rounds.iter().map(Round::cpu_each).collect(),
                other: nginx.rounds.iter().map(Round::cpu_each).collect(),
            });
        }
    }
    rows
}

/// One round against one server: THREADS clients handshaking for ROUND.
fn measure(s: &Series) -> Round {
    let stop = AtomicBool::new(false);
    let (addr, config) = (s.addr, &s.config);
    let cpu_before = (s.cpu)();
    let start = Instant::now();
    let counts: Vec<(u64, u64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let (mut done, mut resumed, mut failed) = (0, 0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        match mtls::handshake(addr, config) {
                            Ok(h) => {
                                done += 1;
                                resumed += u64::from(h.kind == HandshakeKind::Resumed);
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (done, resumed, failed)
                })
            })
            .collect();
        std::thread::sleep(ROUND);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect()
    });
    let wall = start.elapsed();
    let server_cpu = (s.cpu)().saturating_sub(cpu_before);
    Round {
        handshakes: counts.iter().map(|c| c.0).sum(),
        resumed: counts.iter().map(|c| c.1).sum(),
        failed: counts.iter().map(|c| c.2).sum(),
        wall,
        server_cpu,
    }
}
