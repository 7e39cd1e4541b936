//! The audit log end to end: records appended by the real writer (as the
//! gateway does, with the audit key `moat certs init` made), then checked,
//! tampered with and searched through the real `moat audit` commands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{moat, moat_ok};
use moat_audit::{AuditLog, Decision, Options, Record, RequirementOutcome, Signer, Stage};

/// A PKI (for the audit key) and an audit directory in a temp dir.
struct Setup {
    tmp: tempfile::TempDir,
    audit: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        moat_ok(&[
            "certs",
            "init",
            "--dir",
            &pki.display().to_string(),
            "--host",
            "localhost",
        ]);
        let audit = tmp.path().join("audit");
        Setup { tmp, audit }
    }

    fn signer(&self) -> Signer {
        Signer::load(&self.tmp.path().join("pki/audit-key.pem")).unwrap()
    }

    fn open(&self, options: Options) -> AuditLog {
        AuditLog::open(&self.audit, self.signer(), options).unwrap()
    }

    /// Runs `moat audit ARGS... --state-root TMP` (so the default key and
    /// directory are the ones under the temp dir).
    fn audit(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        let root = self.tmp.path().display().to_string();
        all.extend(["--state-root", &root]);
        moat(&all)
    }

    fn verify(&self) -> (i32, String, String) {
        let out = self.audit(&["verify"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.audit)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        files
    }
}

fn record(user: &str, action: &str, decision: Decision, n: usize) -> Record {
    Record {
        audit_id: format!("{user}-{n}"),
        user: user.into(),
        groups: vec!["developer".into()],
        auth: moat_audit::Auth::Mtls,
        cert_serial: Some("3A9F00".into()),
        source: "127.0.0.1:40000".into(),
        user_agent: Some("Docker-Client/28.0.0 (linux)".into()),
        method: "POST".into(),
        path: "/v1.41/containers/create".into(),
        action: Some(action.into()),
        object: Some(format!("c{n}")),
        decision,
        reason: (decision == Decision::Deny).then(|| "container.privileged is denied".into()),
        requirements: vec![RequirementOutcome {
            permission: action.into(),
            object: None,
            allowed: decision == Decision::Allow,
            rule: "role:developer".into(),
        }],
        status: Some(if decision == Decision::Allow {
            201
        } else {
            403
        }),
        duration_us: Some(120),
        ..Record::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `n` records (alice allowed, every third one bob denied) and closes.
fn write_log(setup: &Setup, options: Options, n: usize) {
    runtime().block_on(async {
        let log = setup.open(options);
        for i in 0..n {
            let r = if i % 3 == 2 {
                record("bob", "container.create", Decision::Deny, i)
            } else {
                record("alice", "container.start", Decision::Allow, i)
            };
            log.append(r).await.unwrap();
        }
        log.close().await.unwrap();
    });
}

fn quiet() -> Options {
    Options {
        checkpoint_interval: Duration::from_secs(3600),
        ..Options::default()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The failure line `FILE:LINE: why` and the exit code.
fn expect_failure(setup: &Setup, file: &Path, line: usize, why: &str) {
    let (code, stdout, stderr) = setup.verify();
    assert_eq!(
        code, 1,
        "verify should fail\nstdout: {stdout}\nstderr: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    let prefix = format!("{}:{line}: {why}", file.display());
    assert!(
        first.starts_with(&prefix),
        "expected {prefix:?}…, got {first:?}"
    );
}

#[test]
fn concurrent_appends_then_verify_passes_with_the_exact_count() {
    let setup = Setup::new();
    let (tasks, each) = (64, 100);
    let seqs = runtime().block_on(async {
        let log = setup.open(quiet());
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..each {
                        let r = record(&format!("user{t}"), "container.start", Decision::Allow, i);
                        seqs.push(log.append(r).await.unwrap().seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for h in handles {
            seqs.extend(h.await.unwrap());
        }
        let status = log.status();
        assert!(
            status.commits < (tasks * each) as u64,
            "callers did not share fsyncs: {status:?}"
        );
        log.close().await.unwrap();
        seqs
    });
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tasks * each, "every append got its own seq");

    let (code, stdout, stderr) = setup.verify();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "OK: {} records and 7 checkpoints in 1 file,",
            tasks * each
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("not yet covered"), "{stdout}");

    // Search sees each record once: one user's hundred, all of them.
    let out = setup.audit(&["search", "--user", "user7", "-o", "json"]);
    let found = String::from_utf8(out.stdout).unwrap();
    assert_eq!(found.lines().count(), each);
    let out = setup.audit(&["search", "-o", "json"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        tasks * each
    );
}

#[test]
fn editing_one_byte_fails_naming_that_line() {
    let setup = Setup::new();
    write_log(&setup, quiet(), 30);
    let file = &setup.files()[0];
    let mut bytes = std::fs::read(file).unwrap();
    // Line 8 is alice's; one byte of her name becomes another letter.
    let start: usize = lines(file)[..7].iter().map(|l| l.len() + 1).sum();
    let at = start + lines(file)[7].find("\"alice\"").unwrap() + 1;
    bytes[at] = b'A';
    std::fs::write(file, bytes).unwrap();
    expect_failure(&setup, file, 8, "edited");
}

#[test]
fn deleting_a_line_fails_naming_it() {
    let setup = Setup::new();
    write_log(&setup, quiet(), 30);
    let file = &setup.files()[0];
    let mut all = lines(file);
    all.remove(11);
    write_lines(file, &all);
    expect_failure(&setup, file, 12, "deleted");
}

#[test]
fn swapping_two_lines_fails() {
    let setup = Setup::new();
    write_log(&setup, quiet(), 30);
    let file = &setup.files()[0];
    let mut all = lines(file);
    all.swap(4, 5);
    write_lines(file, &all);
    expect_failure(&setup, file, 5, "reordered");
}

#[test]
fn tampering_across_a_rotation_boundary_fails() {
    let setup = Setup::new();
    let options = Options {
        max_file_bytes: 8 * 1024,
        ..quiet()
    };
    write_log(&setup, options, 120);
    let files = setup.files();
    assert!(files.len() >= 4, "{files:?}");
    let (code, stdout, _) = setup.verify();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("in {} files,", files.len())),
        "{stdout}"
    );
    let pristine: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    let restore = || {
        for (f, bytes) in &pristine {
            std::fs::write(f, bytes).unwrap();
        }
    };

    // The last record of the first file edited: caught by the first line
    // of the second, and blamed on the edited line.
    let mut first = lines(&files[0]);
    let last = first.len();
    first[last - 1] = first[last - 1].replace("\"duration_us\":120", "\"duration_us\":121");
    write_lines(&files[0], &first);
    expect_failure(&setup, &files[0], last, "edited");
    restore();

    // The first record of the second file deleted.
    let mut second = lines(&files[1]);
    second.remove(0);
    write_lines(&files[1], &second);
    expect_failure(&setup, &files[1], 1, "deleted");
    restore();

    // A whole file in the middle deleted.
    std::fs::remove_file(&files[1]).unwrap();
    expect_failure(&setup, &files[2], 1, "deleted");
    restore();

    // Two files' names swapped (their records reordered).
    let tmp = setup.audit.join("swap.tmp");
    std::fs::rename(&files[1], &tmp).unwrap();
    std::fs::rename(&files[2], &files[1]).unwrap();
    std::fs::rename(&tmp, &files[2]).unwrap();
    let (code, _, stderr) = setup.verify();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:1: deleted", files[1].display())),
        "{stderr}"
    );
    restore();
    assert_eq!(setup.verify().0, 0);
}

#[test]
fn a_forged_checkpoint_signature_fails() {
    let setup = Setup::new();
    let options = Options {
        checkpoint_every: 10,
        ..quiet()
    };
    write_log(&setup, options, 25);
    let file = &setup.files()[0];
    let mut all = lines(file);
    // Line 11 is the first checkpoint; change one digit of its signature.
    assert!(all[10].contains("\"kind\":\"checkpoint\""), "{}", all[10]);
    let at = all[10].find("\"sig\":\"").unwrap() + 7;
    let digit = if &all[10][at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    all[10].replace_range(at..at + 1, digit);
    write_lines(file, &all);
    expect_failure(&setup, file, 11, "bad signature");

    // The untouched log checked with another PKI's key.
    let other = tempfile::tempdir().unwrap();
    let other_pki = other.path().join("pki");
    moat_ok(&[
        "certs",
        "init",
        "--dir",
        &other_pki.display().to_string(),
        "--host",
        "localhost",
    ]);
    let setup2 = Setup::new();
    write_log(&setup2, quiet(), 3);
    let key = other_pki.join("audit-pub.pem").display().to_string();
    let out = setup2.audit(&["verify", "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":4: checkpoint seq 4 is signed by key"),
        "{stderr}"
    );
}

#[test]
fn a_torn_last_line_is_recovered_on_reopen() {
    let setup = Setup::new();
    write_log(&setup, quiet(), 5);
    // A crash in the middle of a later write: half a line, no newline.
    let file = setup.files()[0].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    let torn = br#"{"seq":7,"prev":"5f3a","kind":"event","audit_id":"x"#;
    bytes.extend_from_slice(torn);
    std::fs::write(&file, &bytes).unwrap();
    let (code, stdout, stderr) = setup.verify();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("the last line is incomplete"), "{stdout}");

    runtime().block_on(async {
        let log = setup.open(quiet());
        assert_eq!(log.status().last_seq, 6);
        let appended = log
            .append(record("alice", "container.start", Decision::Allow, 99))
            .await
            .unwrap();
        assert_eq!(appended.seq, 7);
        log.close().await.unwrap();
    });
    let (code, stdout, stderr) = setup.verify();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("OK: 6 records and 2 checkpoints"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "removed {} bytes of an incomplete last line",
            torn.len()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("incomplete (being written"), "{stdout}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs: run the tests as root (README)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills a filesystem until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            return path;
        }
    }
}

#[test]
fn fail_closed_on_a_full_disk_then_recover() {
    let setup = Setup::new();
    let mnt = setup.tmp.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "512k");
    let dir = mnt.join("audit");
    runtime().block_on(async {
        let log = AuditLog::open(&dir, setup.signer(), quiet()).unwrap();
        for i in 0..10 {
            log.append(record("alice", "container.start", Decision::Allow, i))
                .await
                .unwrap();
        }
        let filler = fill(&mnt);

        // A big record needs pages the disk no longer has: refused.
        let mut big = record("alice", "container.create", Decision::Allow, 10);
        big.request = Some(serde_json::json!({ "Cmd": ["x".repeat(64 * 1024)] }));
        let file = log.status().file;
        let good_len = std::fs::metadata(&file).unwrap().len();
        let err = log.append(big.clone()).await.unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        // Whatever part of it reached the file was cut back off.
        assert_eq!(std::fs::metadata(&file).unwrap().len(), good_len);
        // Small ones too, once the file's last page is full.
        let mut refused = false;
        for i in 0..100 {
            if log
                .append(record("alice", "container.start", Decision::Allow, 100 + i))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
        }
        assert!(refused, "appends kept succeeding on a full disk");
        let status = log.status();
        assert!(status.failing, "{status:?}");
        assert!(status.last_error.is_some(), "{status:?}");

        // What is on disk is still a whole chain.
        let key = setup
            .tmp
            .path()
            .join("pki/audit-pub.pem")
            .display()
            .to_string();
        let dir_arg = dir.display().to_string();
        let out = moat(&["audit", "verify", "--dir", &dir_arg, "--key", &key]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Space comes back: appends succeed again, in the same chain.
        std::fs::remove_file(filler).unwrap();
        let next = log.append(big).await.unwrap();
        assert!(next.seq > 10);
        let status = log.status();
        assert!(!status.failing, "{status:?}");
        log.close().await.unwrap();

        let out = moat(&["audit", "verify", "--dir", &dir_arg, "--key", &key]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("records refused"), "{stdout}");
    });
}

#[test]
fn search_stats_export_and_tail() {
    let setup = Setup::new();
    write_log(&setup, quiet(), 30);

    let out = setup.audit(&["search", "--user", "bob", "--decision", "deny"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 1 + 10, "{table}");
    assert!(table.contains("container.privileged is denied"), "{table}");

    let out = setup.audit(&[
        "search",
        "--action",
        "container.*",
        "--since",
        "1h",
        "-o",
        "json",
    ]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 30);
    let out = setup.audit(&["search", "--until", "1h", "-o", "json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 0);
    let out = setup.audit(&["search", "--since", "yesterday"]);
    assert!(!out.status.success());

    let out = setup.audit(&["stats", "-o", "json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["calls"], 30);
    assert_eq!(stats["by_user"]["alice"]["allow"], 20);
    assert_eq!(stats["by_user"]["bob"]["deny"], 10);
    assert_eq!(stats["by_action"]["container.create"]["calls"], 10);

    let export = setup.tmp.path().join("export.jsonl");
    let out_arg = export.display().to_string();
    let out = setup.audit(&["export", "--user", "alice", "--out", &out_arg]);
    assert!(out.status.success());
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count(), 20);
    for line in exported.lines() {
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!((r.user.as_str(), r.stage), ("alice", Stage::Completed));
    }
    assert_eq!(common::mode(&export), 0o600);

    let out = setup.audit(&["tail", "-n", "3", "-o", "json"]);
    let tail = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap().audit_id)
        .collect();
    assert_eq!(ids, ["alice-27", "alice-28", "bob-29"]);
}

#[test]
fn tail_follow_prints_new_records_across_a_rotation() {
    use std::io::{BufRead, BufReader};
    let setup = Setup::new();
    let options = Options {
        max_file_bytes: 4 * 1024,
        ..quiet()
    };
    write_log(&setup, options.clone(), 3);
    let root = setup.tmp.path().display().to_string();
    let mut child = Command::new(common::moat_bin())
        .args([
            "audit", "tail", "-f", "-n", "1", "--user", "carol", "-o", "json",
        ])
        .args(["--state-root", &root])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    runtime().block_on(async {
        let log = setup.open(options);
        for i in 0..40 {
            let user = if i % 2 == 0 { "carol" } else { "dave" };
            log.append(record(user, "container.start", Decision::Allow, i))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    });
    assert!(setup.files().len() > 2, "the log rotated while followed");
    let mut got = Vec::new();
    while got.len() < 20 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => got.push(serde_json::from_str::<Record>(&line).unwrap().audit_id),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let expected: Vec<String> = (0..40).step_by(2).map(|i| format!("carol-{i}")).collect();
    assert_eq!(got, expected);
}
