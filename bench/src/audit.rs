//! Durably audited appends per second: N concurrent tokio tasks append
//! gateway-sized records to moat's audit log (group commit: one write and
//! one `fdatasync` per batch) for a fixed time, against the same records
//! written the obvious way (a shared file, one write and one `fdatasync`
//! per record). Afterwards the log is verified and its records counted:
//! every acknowledged append must be there.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_audit::{
    AuditLog, Auth, Decision, Level, Options as AuditOptions, Record, RequirementOutcome, Signer,
};

use crate::Options;
use crate::stats::Row;

const CLIENTS: [usize; 4] = [1, 16, 64, 256];
const RUN_TIME: Duration = Duration::from_secs(2);

/// One measured run: appends acknowledged, over how long.
struct Run {
    acked: u64,
    elapsed: Duration,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }

    /// Time per record, for the shared table.
    fn per_record(&self) -> Duration {
        self.elapsed / self.acked.max(1) as u32
    }
}

pub fn run(options: &Options) -> Vec<Row> {
    let work = options.work.join("audit");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs = options.runs.clamp(1, 3);
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for clients in CLIENTS {
        eprint!("audit: {clients} clients, {runs} runs ");
        let (mut moat, mut naive) = (Vec::new(), Vec::new());
        let mut lost = 0u64;
        for i in 0..runs {
            let dir = work.join(format!("moat-{clients}-{i}"));
            let (run, on_disk) = runtime.block_on(group_commit(&dir, clients));
            lost += run.acked.saturating_sub(on_disk);
            assert!(
                on_disk >= run.acked,
                "{}: {} appends acknowledged, {} on disk",
                dir.display(),
                run.acked,
                on_disk
            );
            moat.push(run);
            let file = work.join(format!("naive-{clients}-{i}.jsonl"));
            naive.push(runtime.block_on(fsync_per_record(&file, clients)));
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&file);
            eprint!(".");
        }
        eprintln!();
        let median = |runs: &[Run]| {
            let mut rates: Vec<f64> = runs.iter().map(Run::per_second).collect();
            rates.sort_by(|a, b| a.total_cmp(b));
            rates[rates.len() / 2]
        };
        summary.push((
            clients,
            median(&moat),
            median(&naive),
            moat.iter().map(|r| r.acked).sum::<u64>(),
            lost,
        ));
        rows.push(Row {
            scenario: "audit append".into(),
            peer: format!("fsync per record, {clients} clients"),
            moat: moat.iter().map(Run::per_record).collect(),
            other: naive.iter().map(Run::per_record).collect(),
        });
    }
    println!();
    println!(
        "{:<8} {:>16} {:>20} {:>14} {:>6}",
        "clients", "moat appends/s", "fsync-per-record/s", "moat appends", "lost"
    );
    for (clients, moat, naive, acked, lost) in summary {
        println!("{clients:<8} {moat:>16.0} {naive:>20.0} {acked:>14} {lost:>6}");
    }
    println!(
        "appends/s = durably written (fdatasync'd) records per second, median of runs of {}s; \
         lost = acknowledged appends missing from the verified log",
        RUN_TIME.as_secs()
    );
    rows
}

/// What the gateway writes for a typical allowed call.
fn record(client: usize, n: u64) -> Record {
    Record {
        audit_id: format!("{client:04}-{n:08}"),
        level: Level::Metadata,
        user: format!("user{client}"),
        groups: vec!["developer".into()],
        auth: Auth::Mtls,
        cert_serial: Some("3A9F5C0D11E24B7788A0F0E1D2C3B4A5".into()),
        cert_fingerprint: Some(
            "5f3a1c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19".into(),
        ),
        source: "10.0.0.17:52144".into(),
        user_agent: Some("Docker-Client/28.0.1 (linux)".into()),
        method: "POST".into(),
        path: "/v1.41/containers/create?name=web".into(),
        action: Some("container.create".into()),
        object: Some("web".into()),
        decision: Decision::Allow,
        requirements: vec![
            RequirementOutcome {
                permission: "container.create".into(),
                object: None,
                allowed: true,
                rule: "p, role:developer, container.create, *, allow".into(),
            },
            RequirementOutcome {
                permission: "image.use".into(),
                object: Some("docker.io/library/busybox".into()),
                allowed: true,
                rule: "p, role:developer, image.use, docker.io/*, allow".into(),
            },
        ],
        status: Some(201),
        bytes_in: Some(1432),
        bytes_out: Some(88),
        duration_us: Some(950),
        ..Record::default()
    }
}

/// Runs `clients` tasks appending for [`RUN_TIME`], then closes the log,
/// verifies it and counts its records.
async fn group_commit(dir: &Path, clients: usize) -> (Run, u64) {
    let signer = Signer::generate();
    let key = signer.public_key().clone();
    let log = AuditLog::open(dir, signer, AuditOptions::default()).expect("open the audit log");
    let start = Instant::now();
    let deadline = start + RUN_TIME;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    log.append(record(client, n)).await.expect("append");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("client task");
    }
    let elapsed = start.elapsed();
    log.close().await.expect("close the audit log");
    let report = moat_audit::verify(&[dir.to_path_buf()], &key).expect("the log verifies");
    (Run { acked, elapsed }, report.records)
}

/// The same records, one write and one fdatasync each, under a mutex.
async fn fsync_per_record(path: &Path, clients: usize) -> Run {
    let file = Arc::new(Mutex::new(std::fs::File::create(path).expect("create")));
    let start = Instant::now();
    let deadline = start + RUN_TIME;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let file = Arc::clone(&file);
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    let mut line = serde_json::to_vec(&record(client, n)).expect("serializes");
                    line.push(b'\n');
                    let file = Arc::clone(&file);
                    tokio::task::spawn_blocking(move || {
                        let mut file = file.lock().expect("lock");
                        file.write_all(&line).and_then(|()| file.sync_data())
                    })
                    .await
                    .expect("blocking task")
                    .expect("write");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("client task");
    }
    Run {
        acked,
        elapsed: start.elapsed(),
    }
}
