//! Added latency per call: `GET /_ping` and `GET /containers/json` (ten
//! containers running) on ONE kept-alive connection each: through the
//! gateway (mutual TLS, policy, durable audit: the completed record is
//! fdatasync'd before the response is released), through nginx
//! terminating the same mutual TLS with no policy and no audit, and on the
//! engine's socket directly. The three are called in turn, the order
//! rotating call by call, so drift on the shared machine hits all alike.
//! Added latency = a proxy's percentile minus the direct call's. A fourth
//! turn in the same rotation appends a record-sized line to a file in the
//! state directory and fdatasyncs it, which is what each audit batch costs
//! the gateway at least on this disk.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::Options;
use crate::mtls::{self, Response};
use crate::stack::Stack;
use crate::stats::{Figure, Row, percentile};

/// Calls per path at least, whatever `--runs` says: a p99 needs them.
const CALLS_AT_LEAST: usize = 2000;
const WARMUP: usize = 200;
const CONTAINERS: usize = 10;

/// One way to make the call, and the latencies it measured.
struct Side<'a> {
    call: Box<dyn FnMut(&str) -> Response + 'a>,
    /// Whether it answers the call (the fdatasync probe does not).
    answers: bool,
    samples: Vec<Duration>,
}

impl Side<'_> {
    fn timed(&mut self, path: &str) -> (Duration, Response) {
        let start = Instant::now();
        let response = (self.call)(path);
        (start.elapsed(), response)
    }
}

pub fn run(options: &Options, figures: &mut Vec<Figure>) -> Vec<Row> {
    eprintln!("proxy: starting the engine, the gateway, {CONTAINERS} containers and nginx");
    let mut stack = Stack::start(options, "proxy", &["--user-rate", "0"]);
    stack.run_containers(CONTAINERS);
    stack.start_nginx();

    let client = stack.client(true);
    let mut gateway =
        mtls::tls(stack.gateway_addr, client.clone()).expect("connect to the gateway");
    let mut direct = mtls::unix(&stack.engine_socket).expect("connect to the engine");
    let mut nginx = stack
        .nginx
        .as_ref()
        .map(|n| mtls::tls(n.addr, client.clone()).expect("connect to nginx"));
    let mut sides = vec![
        Side {
            call: Box::new(|path| gateway.get(path).expect("call through the gateway")),
            answers: true,
            samples: Vec::new(),
        },
        Side {
            call: Box::new(|path| direct.get(path).expect("call on the engine socket")),
            answers: true,
            samples: Vec::new(),
        },
    ];
    let probe_path = stack.dir.join("fsync-probe");
    let mut probe = std::fs::File::create(&probe_path).expect("probe file");
    sides.push(Side {
        call: Box::new(move |_| {
            probe.write_all(&[b'x'; 700]).expect("probe write");
            probe.sync_data().expect("fdatasync");
            Response {
                status: 200,
                body: Vec::new(),
            }
        }),
        answers: false,
        samples: Vec::new(),
    });
    if let Some(nginx) = nginx.as_mut() {
        sides.push(Side {
            call: Box::new(|path| nginx.get(path).expect("call through nginx")),
            answers: true,
            samples: Vec::new(),
        });
    }

    let calls = options.runs.max(CALLS_AT_LEAST);
    let mut rows = Vec::new();
    for path in ["/_ping", "/containers/json"] {
        let listed = |r: &Response| {
            path != "/containers/json"
                || String::from_utf8_lossy(&r.body).matches("\"Id\"").count() == CONTAINERS
        };
        for side in &mut sides {
            side.samples.clear();
            for _ in 0..WARMUP {
                let (_, response) = side.timed(path);
                assert!(
                    response.status == 200 && (!side.answers || listed(&response)),
                    "GET {path}: {} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
            }
        }
        eprint!("proxy: GET {path}, {calls} calls on each side ");
        for i in 0..calls {
            let n = sides.len();
            for k in 0..n {
                let side = &mut sides[(i + k) % n];
                let (elapsed, response) = side.timed(path);
                assert_eq!(response.status, 200, "GET {path}");
                side.samples.push(elapsed);
            }
            if i % (calls / 10).max(1) == 0 {
                eprint!(".");
            }
        }
        eprintln!();
        rows.extend(report(path, &sides, figures));
    }
    drop(sides);
    let _ = std::fs::remove_file(&probe_path);
    rows
}

/// The rows (gateway against direct and against nginx) and the added
/// latencies of one path. `sides` are the gateway, the direct call, the
/// fdatasync probe and, when it runs, nginx.
fn report(path: &str, sides: &[Side], figures: &mut Vec<Figure>) -> Vec<Row> {
    let scenario = format!("proxy {path}");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (gateway, direct) = (&sides[0].samples, &sides[1].samples);
    let calls = gateway.len();
    let added =
        |samples: &[Duration], p: f64| us(percentile(samples, p)) - us(percentile(direct, p));
    let fsync = &sides[2].samples;
    let nginx = sides.get(3).map(|s| s.samples.as_slice());
    let nginx_added = |p: f64| nginx.map(|n| added(n, p));

    let fig = |name: &str, value: f64| {
        Figure::new("proxy", format!("{path} {name}"), value, "µs").runs(calls)
    };
    figures.push(fig("direct p50", us(percentile(direct, 50.0))));
    figures.push(fig("direct p99", us(percentile(direct, 99.0))));
    figures.push(fig(
        "fdatasync of a 700-byte append p50",
        us(percentile(fsync, 50.0)),
    ));
    figures.push(fig(
        "fdatasync of a 700-byte append p99",
        us(percentile(fsync, 99.0)),
    ));
    let mut p50 = fig("gateway added p50", added(gateway, 50.0)).at_most(100.0, "100 µs");
    let mut p99 = fig("gateway added p99", added(gateway, 99.0)).at_most(1000.0, "1 ms");
    // What the gateway adds besides the one fdatasync every answer waits
    // for, which nginx (no audit) does not pay: its own share to compare.
    let beyond_fsync = added(gateway, 50.0) - us(percentile(fsync, 50.0));
    if let (Some(n50), Some(n99)) = (nginx_added(50.0), nginx_added(99.0)) {
        p50 = p50.and_at_most(n50, "nginx");
        p99 = p99.and_at_most(n99, "nginx");
        figures.push(p50);
        figures.push(p99);
        figures.push(fig("nginx added p50", n50));
        figures.push(fig("nginx added p99", n99));
        figures.push(
            fig("gateway added p50 less the fdatasync p50", beyond_fsync)
                .at_most(n50, "nginx added p50"),
        );
    } else {
        figures.push(p50);
        figures.push(p99);
    }

    let mut rows = vec![Row {
        scenario: scenario.clone(),
        peer: "engine socket (direct)".into(),
        moat: gateway.clone(),
        other: direct.clone(),
    }];
    if let Some(nginx) = nginx {
        rows.push(Row {
            scenario,
            peer: "nginx 1.22 mTLS proxy".into(),
            moat: gateway.clone(),
            other: nginx.to_vec(),
        });
    }
    rows
}
