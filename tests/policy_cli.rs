//! `moat policy` end to end: the real binary on a temporary state root,
//! and against a real gateway through its admin API.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::gateway::GatewayProcess;
use common::{moat, snapshot};

/// A temporary state root.
struct State {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl State {
    fn new() -> State {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        State { _tmp: tmp, root }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.root.display().to_string();
        let mut full = vec!["--state-root", root.as_str()];
        full.extend_from_slice(args);
        moat(&full)
    }

    /// `moat policy ARGS`, which must exit with `code`; its stdout.
    fn policy(&self, code: i32, args: &[&str]) -> String {
        let mut full = vec!["policy"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        assert_eq!(
            out.status.code(),
            Some(code),
            "moat policy {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The same, returning stderr.
    fn policy_err(&self, code: i32, args: &[&str]) -> String {
        let mut full = vec!["policy"];
        full.extend_from_slice(args);
        let out = self.run(&full);
        assert_eq!(out.status.code(), Some(code), "moat policy {args:?}");
        String::from_utf8(out.stderr).unwrap()
    }

    fn policy_dir(&self) -> PathBuf {
        self.root.join("policy")
    }

    fn csv(&self) -> String {
        std::fs::read_to_string(self.policy_dir().join("policy.csv")).unwrap()
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.root.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

#[test]
fn a_role_bound_to_a_user_decides_docker_command_lines() {
    let s = State::new();
    s.policy(
        0,
        &[
            "role",
            "create",
            "ci",
            "--allow",
            "container.create",
            "--allow",
            "container.start",
            "--allow",
            "image.use:docker.io/library/*",
            "--deny",
            "host.bind",
        ],
    );
    let out = s.policy(0, &["bind", "bob", "ci"]);
    assert!(out.contains("+ g, user:bob, ci"), "{out}");
    assert!(s.csv().ends_with("g, user:bob, ci\n"), "{}", s.csv());

    let out = s.policy(0, &["check", "bob", "--", "docker", "run", "-d", "busybox"]);
    assert!(
        out.starts_with("bob (groups: none; roles: ci): ALLOWED"),
        "{out}"
    );

    let out = s.policy(
        1,
        &[
            "check",
            "bob",
            "--",
            "docker",
            "run",
            "-d",
            "--privileged",
            "-v",
            "/:/x",
            "busybox",
        ],
    );
    assert!(
        out.starts_with("bob (groups: none; roles: ci): DENIED"),
        "{out}"
    );
    assert!(
        out.contains("container.privileged  *                          deny      default deny"),
        "{out}"
    );
    let bind_row = out.lines().find(|l| l.starts_with("host.bind")).unwrap();
    assert!(bind_row.ends_with("p, ci, host.bind, *, deny"), "{out}");

    // The same as JSON, and a raw request.
    let json: serde_json::Value = serde_json::from_str(&s.policy(
        1,
        &[
            "check",
            "bob",
            "-o",
            "json",
            "--",
            "docker",
            "run",
            "-d",
            "--privileged",
            "busybox",
        ],
    ))
    .unwrap();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["requests"][0]["path"], "/v1.41/containers/create");
    assert_eq!(
        json["requests"][0]["decisions"][2]["permission"],
        "container.privileged"
    );
    let out = s.policy(1, &["check", "bob", "GET", "/v1.41/containers/json"]);
    assert!(
        out.contains("container.list  *       deny      default deny"),
        "{out}"
    );
    let body = r#"{"Image":"busybox","HostConfig":{"Binds":["/srv:/srv"]}}"#;
    let out = s.policy(
        1,
        &["check", "bob", "POST", "/v1.41/containers/create", body],
    );
    assert!(out.contains("host.bind         /srv"), "{out}");

    // A group from the certificate counts; --others adds container.any.
    s.policy(
        0,
        &[
            "check",
            "alice",
            "-g",
            "developer",
            "--",
            "docker",
            "logs",
            "web",
        ],
    );
    let out = s.policy(
        1,
        &[
            "check",
            "alice",
            "-g",
            "developer",
            "--others",
            "--",
            "docker",
            "logs",
            "web",
        ],
    );
    assert!(out.contains("container.any"), "{out}");

    // What the gateway would refuse as malformed is a denial; what
    // cannot be read is neither (2).
    let out = s.policy(
        1,
        &[
            "check",
            "bob",
            "--",
            "docker",
            "run",
            "--network",
            "mynet",
            "busybox",
        ],
    );
    assert!(out.contains("REFUSED"), "{out}");
    let err = s.policy_err(2, &["check", "bob", "--", "docker", "frobnicate"]);
    assert!(err.contains("does not know `docker frobnicate`"), "{err}");
    let err = s.policy_err(1, &["role", "create", "bad", "--allow", "contianer.start"]);
    assert!(
        err.contains("unknown permission \"contianer.start\""),
        "{err}"
    );
}

#[test]
fn lock_denies_everything_and_unlock_removes_exactly_the_lock() {
    let s = State::new();
    let admin_ps = ["check", "carol", "-g", "admin", "--", "docker", "ps"];
    s.policy(0, &admin_ps);
    s.policy(0, &["bind", "carol", "operator"]);
    let before = s.csv();

    let out = s.policy(0, &["lock", "carol", "--reason", "laptop stolen"]);
    assert!(out.contains("carol is locked"), "{out}");
    let csv = s.csv();
    assert!(csv.contains("\n# moat policy lock carol ("), "{csv}");
    assert!(
        csv.contains("laptop stolen)\np, user:carol, *, *, deny\n"),
        "{csv}"
    );
    let out = s.policy(1, &admin_ps);
    assert!(out.contains("p, user:carol, *, *, deny"), "{out}");
    s.policy(1, &["check", "carol", "-g", "admin", "GET", "/v1.41/_ping"]);
    let users = s.policy(0, &["users"]);
    let row = users.lines().find(|l| l.starts_with("carol")).unwrap();
    assert!(
        row.contains("operator") && row.ends_with("LOCKED"),
        "{users}"
    );

    assert!(s.policy(0, &["lock", "carol"]).contains("locked already"));
    s.policy(0, &["unlock", "carol"]);
    assert_eq!(s.csv(), before);
    s.policy(0, &admin_ps);
    let err = s.policy_err(1, &["unlock", "carol"]);
    assert!(err.contains("carol is not locked"), "{err}");
}

#[test]
fn a_broken_policy_is_refused_and_nothing_changes() {
    let s = State::new();
    s.policy(0, &["bind", "dave", "viewer"]);
    let dir = s.policy_dir();
    let before = snapshot(&dir);

    let broken = s.file(
        "broken.csv",
        "p, dev, container.create, *, allow\np, dev, contianer.start, *, allow\n",
    );
    let err = s.policy_err(1, &["import", &broken]);
    assert!(
        err.contains("broken.csv was refused and the policy in force stays")
            && err.contains("policy.csv line 2: unknown permission \"contianer.start\""),
        "{err}"
    );
    let bad_model = s.file(
        "bad.json",
        r#"{"policy": "p, admin, *, *, allow\n", "model": "[request_definition]\nr = sub, obj\n"}"#,
    );
    let err = s.policy_err(1, &["import", &bad_model]);
    assert!(err.contains("model.conf"), "{err}");
    let err = s.policy_err(1, &["validate", &broken]);
    assert!(err.contains("line 2"), "{err}");
    let err = s.policy_err(1, &["dry-run", "start", &broken]);
    assert!(err.contains("no dry run started"), "{err}");
    // A change whose result does not validate: binding to no role.
    let err = s.policy_err(1, &["bind", "dave", "nosuchrole"]);
    assert!(err.contains("no role \"nosuchrole\""), "{err}");
    let err = s.policy_err(1, &["role", "create", "x", "--allow", "host.bind:tmp/x"]);
    assert!(err.contains("can never match host.bind"), "{err}");

    assert_eq!(
        snapshot(&dir),
        before,
        "the policy directory is byte for byte the same"
    );
    assert!(!dir.join("dry-run").exists());
}

#[test]
fn export_diff_import_round_trip() {
    let s = State::new();
    let exported = s.root.join("exported.csv");
    s.policy(0, &["export", "--out", exported.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&exported).unwrap(),
        s.csv_or_default()
    );
    let mut text = std::fs::read_to_string(&exported).unwrap();
    text.push_str("g, user:erin, operator\n");
    let text = text.replace("p, developer, exec.root, *, allow\n", "");
    let candidate = s.file("candidate.csv", &text);
    let out = s.policy(1, &["diff", &candidate]);
    assert!(out.contains("- p, developer, exec.root, *, allow"), "{out}");
    assert!(out.contains("+ g, user:erin, operator"), "{out}");
    s.policy(0, &["import", &candidate]);
    assert_eq!(s.csv(), text);
    assert!(
        s.policy(0, &["diff", &candidate])
            .contains("(the same rules)")
    );
    let out = s.policy(0, &["validate"]);
    assert!(
        out.contains("valid:") && out.contains("roles (admin, developer, operator, viewer)"),
        "{out}"
    );

    let json = s.policy(0, &["export", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["policy"], text);
    assert!(json["model"].as_str().unwrap().contains("[matchers]"));
}

impl State {
    /// The policy file, or the default a gateway would write.
    fn csv_or_default(&self) -> String {
        std::fs::read_to_string(self.policy_dir().join("policy.csv")).unwrap_or_else(|_| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/default/policy.csv"),
            )
            .unwrap()
        })
    }
}

#[test]
fn users_come_from_bindings_and_issued_certificates() {
    let s = State::new();
    let pki = s.root.join("pki").display().to_string();
    let out_dir = s.root.join("frank").display().to_string();
    s.run(&["certs", "init", "--dir", &pki, "--ip", "127.0.0.1"]);
    let issued = s.run(&[
        "certs",
        "issue",
        "frank",
        "--dir",
        &pki,
        "--group",
        "developer",
        "--group",
        "ml",
        "--out",
        &out_dir,
    ]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    s.policy(0, &["bind", "grace", "viewer"]);

    let json: serde_json::Value =
        serde_json::from_str(&s.policy(0, &["users", "-o", "json"])).unwrap();
    let users = json["users"].as_array().unwrap();
    let frank = users.iter().find(|u| u["user"] == "frank").unwrap();
    assert_eq!(frank["groups"], serde_json::json!(["developer", "ml"]));
    assert_eq!(frank["roles"], serde_json::json!(["developer"]));
    assert_eq!(frank["certificates"]["valid"], 1);
    assert_eq!(frank["locked"], false);
    let grace = users.iter().find(|u| u["user"] == "grace").unwrap();
    assert_eq!(grace["roles"], serde_json::json!(["viewer"]));
    assert_eq!(grace["certificates"]["valid"], 0);
    assert_eq!(
        json["groups"]["developer"],
        serde_json::json!(["developer"])
    );

    let table = s.policy(0, &["users"]);
    let row = table.lines().find(|l| l.starts_with("frank")).unwrap();
    assert!(
        row.contains("developer, ml") && row.contains("1 valid"),
        "{table}"
    );
}

#[test]
fn dry_run_reports_what_the_candidate_would_deny() {
    let s = State::new();
    let mut candidate = s.csv_or_default();
    candidate.push_str("p, user:alice, host.bind, *, deny\n");
    let candidate = s.file("candidate.csv", &candidate);
    let out = s.policy(0, &["dry-run", "start", &candidate]);
    assert!(out.contains("+ p, user:alice, host.bind, *, deny"), "{out}");
    assert!(out.contains("Started the dry run"), "{out}");
    let dry = s.policy_dir().join("dry-run");
    assert!(dry.join("policy.csv").exists() && dry.join("model.conf").exists());
    assert!(s.policy(0, &["dry-run", "status"]).contains("dry run of"));
    assert!(
        s.policy(1, &["diff"])
            .contains("+ p, user:alice, host.bind, *, deny")
    );

    // What the gateway writes for calls the candidate decides differently.
    let audit = s.root.join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let record = |seq: u64, user: &str, dry_run: Option<serde_json::Value>| {
        let mut r = serde_json::json!({
            "seq": seq, "prev": "0".repeat(64), "kind": "event", "audit_id": format!("a{seq}"),
            "stage": "completed", "time": now, "level": "metadata", "user": user,
            "groups": ["developer"], "auth": "mtls", "source": "127.0.0.1:5000",
            "method": "POST", "path": "/v1.41/containers/create", "action": "container.create",
            "decision": "allow", "requirements": [],
        });
        if let Some(d) = dry_run {
            r["dry_run"] = d;
        }
        r.to_string()
    };
    let lines = [
        record(
            1,
            "alice",
            Some(
                serde_json::json!({"allowed": false, "denied": ["host.bind:/srv (policy.csv:160: p, user:alice, host.bind, *, deny)"]}),
            ),
        ),
        record(2, "bob", None),
        record(
            3,
            "alice",
            Some(
                serde_json::json!({"allowed": false, "denied": ["host.bind:/srv (policy.csv:160: p, user:alice, host.bind, *, deny)"]}),
            ),
        ),
    ];
    std::fs::write(
        audit.join("audit-00000000000000000001.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let out = s.policy(0, &["dry-run", "report", "--since", "1h"]);
    assert!(out.starts_with("3 calls since"), "{out}");
    assert!(out.contains("would deny 2"), "{out}");
    let by_user = out.split("By user and requirement:").nth(1).unwrap();
    assert!(
        by_user.contains("alice") && by_user.trim_end().ends_with('2'),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.policy(
        0,
        &[
            "dry-run", "report", "--since", "1h", "--user", "bob", "-o", "json",
        ],
    ))
    .unwrap();
    assert_eq!(json["calls"], 1);
    assert_eq!(json["would_deny"], serde_json::json!([]));

    s.policy(0, &["dry-run", "stop"]);
    assert!(!dry.exists());
    assert!(s.policy(0, &["dry-run", "status"]).contains("no dry run"));
}

/// A gateway's policy, changed and checked through its admin API with an
/// admin certificate; a lock cuts the user off; a dry run on the
/// gateway's host shows up in the report.
#[test]
fn remote_mode_against_a_real_gateway() {
    let gw = GatewayProcess::start();
    let admin = gw.issue("root", &["admin"]);
    let hank = gw.issue("hank", &[]);
    let url = format!("https://{}", gw.address);
    let admin_dir = admin.display().to_string();
    let remote = |code: i32, args: &[&str]| -> String {
        let mut full = vec!["policy", "--gateway", &url, "--cert-path", &admin_dir];
        full.extend_from_slice(args);
        let out = moat(&full);
        assert_eq!(
            out.status.code(),
            Some(code),
            "moat {full:?}:\n{}{}\ngateway log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gw.log()
        );
        String::from_utf8(out.stdout).unwrap()
    };

    assert!(remote(0, &["roles"]).contains("developer"));
    let err = gw.docker_err(&hank, &["ps"]);
    assert!(err.contains("default deny"), "{err}");
    remote(0, &["bind", "hank", "developer"]);
    let local = std::fs::read_to_string(gw.state().join("policy/policy.csv")).unwrap();
    assert!(
        local.contains("g, user:hank, developer"),
        "the gateway wrote it down"
    );
    gw.docker_ok(&hank, &["ps"]);

    let out = remote(
        1,
        &[
            "check",
            "hank",
            "--",
            "docker",
            "run",
            "--privileged",
            "busybox",
        ],
    );
    assert!(out.contains("container.privileged  *"), "{out}");
    remote(
        0,
        &[
            "check",
            "hank",
            "--",
            "docker",
            "run",
            "-d",
            "busybox:test",
            "true",
        ],
    );

    // An open attached session, cut by the lock.
    let mut session = open_session(&gw, &hank);
    remote(0, &["lock", "hank"]);
    wait_closed(&gw, &mut session);
    let err = gw.docker_err(&hank, &["ps"]);
    assert!(err.contains("p, user:hank, *, *, deny"), "{err}");
    remote(0, &["unlock", "hank"]);
    gw.docker_ok(&hank, &["ps"]);

    // The same through the local directory: the gateway re-reads it (the
    // files root writes stay readable to the gateway's own account).
    let state = gw.state().display().to_string();
    let local = |args: &[&str]| {
        let mut full = vec!["--state-root", &state, "policy"];
        full.extend_from_slice(args);
        let out = moat(&full);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut session = open_session(&gw, &hank);
    local(&["lock", "hank"]);
    wait_closed(&gw, &mut session);
    local(&["unlock", "hank"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.docker(&hank, &["ps"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the unlock was not picked up:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A refused change leaves the gateway's policy as it was.
    let before = remote(0, &["export"]);
    let broken = gw.engine.path("broken.csv");
    std::fs::write(&broken, "p, dev, contianer.start, *, allow\n").unwrap();
    remote(1, &["import", broken.to_str().unwrap()]);
    assert_eq!(remote(0, &["export"]), before);

    // Dry run, on the gateway's host: hank may list containers, the
    // candidate would not let him.
    let candidate = gw.engine.path("candidate.csv");
    std::fs::write(
        &candidate,
        format!("{before}p, user:hank, container.list, *, deny\n"),
    )
    .unwrap();
    let out = moat(&[
        "--state-root",
        &state,
        "policy",
        "dry-run",
        "start",
        candidate.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        gw.docker_ok(&hank, &["ps"]);
        let out = moat(&[
            "--state-root",
            &state,
            "policy",
            "dry-run",
            "report",
            "-o",
            "json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !json["would_deny"].as_array().unwrap().is_empty() {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "no dry-run record:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let call = &report["would_deny"][0];
    assert_eq!(call["user"], "hank");
    assert_eq!(call["action"], "container.list");
    assert_eq!(call["decision"], "allow", "the candidate enforced nothing");
    let denied = call["dry_run"]["denied"][0].as_str().unwrap();
    assert!(
        denied.contains("container.list")
            && denied.contains("p, user:hank, container.list, *, deny"),
        "{denied}"
    );
    let out = moat(&["--state-root", &state, "policy", "dry-run", "stop"]);
    assert!(out.status.success());
}

/// The command-line example in docs/policy.md is the tool's real output
/// (its first request, which the docs show whole, and its last).
#[test]
fn the_docs_command_line_example_is_real() {
    let s = State::new();
    let out = s.policy(
        1,
        &[
            "check",
            "alice",
            "-g",
            "developer",
            "--",
            "docker",
            "run",
            "--privileged",
            "-v",
            "/:/x",
            "busybox",
        ],
    );
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"))
            .unwrap();
    let first = out
        .split("\nPOST /v1.41/containers/(id)/attach")
        .next()
        .unwrap();
    assert!(doc.contains(first), "docs/policy.md should show:\n{first}");
    let last = out
        .split("\n\nPOST /v1.41/containers/(id)/start\n")
        .nth(1)
        .unwrap();
    assert!(
        doc.contains(last),
        "docs/policy.md should end the example with:\n{last}"
    );
}

/// A policy.csv broken by hand: changes are refused with the reason,
/// and an import (validated) replaces it.
#[test]
fn a_policy_broken_by_hand_is_replaced_by_an_import() {
    let s = State::new();
    s.policy(0, &["bind", "ivan", "viewer"]);
    let good = s.csv();
    std::fs::write(
        s.policy_dir().join("policy.csv"),
        "p, viewer, system.ping, *, alow\n",
    )
    .unwrap();
    let err = s.policy_err(1, &["bind", "ivan", "operator"]);
    assert!(err.contains("neither allow nor deny"), "{err}");
    let file = s.file("good.csv", &good);
    let out = s.run(&["policy", "import", &file]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replacing a policy that does not load"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.csv(), good);
}

/// `docker run -i busybox:test sh` through the gateway as `certs`, held
/// open on its stdin; returns once the gateway has started the container.
fn open_session(gw: &GatewayProcess, certs: &Path) -> std::process::Child {
    let starts = || {
        gw.audit_records()
            .iter()
            .filter(|r| r["action"] == "container.start")
            .count()
    };
    let before = starts();
    let mut session = gw
        .docker_cmd(certs)
        .args(["run", "-i", "--rm", "busybox:test", "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while starts() == before {
        assert!(
            Instant::now() < deadline,
            "the session did not start:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(session.try_wait().unwrap().is_none(), "the session is open");
    session
}

/// Waits until the gateway has closed the session's connection.
fn wait_closed(gw: &GatewayProcess, session: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the locked session stayed open:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(session.stdin.take());
}
