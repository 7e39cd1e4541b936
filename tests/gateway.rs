//! The gateway with real processes: `moat engine`, `moat gateway`, a PKI
//! from `moat certs`, and the real `docker` CLI over mutual TLS. Each
//! security promise is shown by trying the attack and watching it fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gateway::GatewayProcess;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_developer_works_on_their_own_containers_and_nothing_more() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let bob = gw.issue("bob", &["developer"]);

    let out = gw.docker_ok(&alice, &["run", "--rm", "busybox:test", "echo", "hi"]);
    assert_eq!(out.trim(), "hi");
    gw.docker_ok(
        &alice,
        &["run", "-d", "--name", "web", "busybox:test", "sleep", "300"],
    );
    let ps = gw.docker_ok(&alice, &["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "web");
    gw.docker_ok(&alice, &["logs", "web"]);
    assert_eq!(
        gw.docker_ok(&alice, &["exec", "web", "echo", "hi"]).trim(),
        "hi"
    );

    // The owner label is the gateway's: stamped on create, never forged.
    let owner = gw.docker_ok(
        &alice,
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"moat.owner\"}}",
            "web",
        ],
    );
    assert_eq!(owner.trim(), "alice");
    let forged = gw.docker_err(
        &bob,
        &[
            "run",
            "--rm",
            "--label",
            "moat.owner=alice",
            "busybox:test",
            "true",
        ],
    );
    assert!(forged.contains("set by the gateway"), "{forged}");

    // Privileges a developer does not hold, each refused with the reason.
    for (flags, needed) in [
        (&["--privileged"][..], "container.privileged"),
        (&["-v", "/:/host"], "host.bind:/"),
        (&["--net", "host"], "host.network"),
        (&["--pid", "host"], "host.pid"),
        (&["--cap-add", "SYS_ADMIN"], "container.cap_add:SYS_ADMIN"),
        (&["--userns", "host"], "host.userns"),
        (
            &["--security-opt", "seccomp=unconfined"],
            "security.seccomp_unconfined",
        ),
        (&["--device", "/dev/fuse"], "host.device:/dev/fuse"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox:test", "true"]);
        let err = gw.docker_err(&alice, &args);
        assert!(
            err.contains(&format!("alice may not {needed}")) && err.contains("default deny"),
            "{flags:?}: {err}"
        );
    }

    // Bob sees none of alice's containers and can touch none of them,
    // by name or by id prefix.
    let bobs_view = gw.docker_ok(&bob, &["ps", "-a", "-q"]);
    assert!(bobs_view.trim().is_empty(), "bob sees {bobs_view}");
    let id = gw.docker_ok(&alice, &["inspect", "-f", "{{.Id}}", "web"]);
    let prefix = &id.trim()[..6];
    for target in ["web", prefix] {
        for args in [
            vec!["logs", target],
            vec!["exec", target, "id"],
            vec!["stop", target],
            vec!["rm", "-f", target],
            vec!["inspect", target],
        ] {
            let err = gw.docker_err(&bob, &args);
            assert!(err.contains("container.any"), "{args:?}: {err}");
        }
    }
    // Prune by bob leaves alice's stopped container alone.
    gw.docker_ok(&alice, &["stop", "-t", "1", "web"]);
    gw.docker_ok(&bob, &["container", "prune", "-f"]);
    gw.docker_ok(&alice, &["inspect", "web"]);
    gw.docker_ok(&alice, &["rm", "web"]);
}

#[test]
fn a_viewer_reads_but_does_not_run_read_logs_or_exec() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let vic = gw.issue("vic", &["viewer"]);
    gw.docker_ok(
        &alice,
        &["run", "-d", "--name", "job", "busybox:test", "sleep", "300"],
    );

    let ps = gw.docker_ok(&vic, &["ps", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "job");
    let running = gw.docker_ok(&vic, &["inspect", "-f", "{{.State.Running}}", "job"]);
    assert_eq!(running.trim(), "true");
    for args in [
        &["run", "--rm", "busybox:test", "true"][..],
        &["logs", "job"],
        &["exec", "job", "true"],
    ] {
        let err = gw.docker_err(&vic, args);
        assert!(err.contains("vic may not"), "{args:?}: {err}");
    }
    gw.docker_ok(&alice, &["rm", "-f", "job"]);
}

/// A rustls client with `bundle`'s certificate (or none).
fn tls_client(bundle: Option<&Path>, ca: &Path) -> Arc<rustls::ClientConfig> {
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    match bundle {
        Some(dir) => moat_certs::tls::client_config(
            &ca_pem,
            &std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("key.pem")).unwrap(),
        )
        .unwrap(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            Arc::new(
                rustls::ClientConfig::builder_with_provider(moat_certs::tls::provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
    }
}

/// Sends `request` raw over mutual TLS and returns the whole answer (the
/// gateway closes after an error, or the read times out), or the TLS error.
fn raw(
    gw: &GatewayProcess,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> Result<String, String> {
    let tcp = TcpStream::connect(&gw.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[test]
fn raw_socket_attacks_are_denied_and_audited() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let ca = alice.join("ca.pem");
    let client = tls_client(Some(&alice), &ca);
    let privileged = r#"{"Image":"busybox:test","Cmd":["true"],"HostConfig":{"Privileged":true}}"#;
    let big = format!(
        r#"{{"Image":"busybox:test","Labels":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    let chunked = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{privileged}\r\n0\r\n\r\n",
        privileged.len()
    );
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "Content-Length: 0 with a privileged body",
            format!(
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 0\r\n\r\n{privileged}"
            ),
            400,
        ),
        ("a chunked privileged body", chunked, 403),
        (
            "Content-Length and Transfer-Encoding together",
            format!(
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{privileged}\r\n0\r\n\r\n",
                privileged.len(),
                privileged.len()
            ),
            400,
        ),
        (
            // Refused on the declared length, before the body is read: only
            // the head is sent, so the answer is not lost to a reset.
            "a body over the cap",
            format!(
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                big.len()
            ),
            413,
        ),
        (
            "a dot segment",
            get("/v1.41/containers/../containers/json"),
            400,
        ),
        (
            "an encoded dot segment",
            get("/v1.41/containers/%2e%2e/containers/json"),
            400,
        ),
        ("an encoded slash", get("/v1.41/containers/a%2fb/json"), 400),
        ("a double slash", get("/v1.41//containers/json"), 400),
        ("an unknown route", get("/v1.41/secrets/of/the/host"), 403),
        (
            "a method the table does not know",
            "PATCH /v1.41/containers/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
            403,
        ),
    ];
    let before = gw.completed_calls().len();
    for (what, request, expected) in &cases {
        let answer = raw(&gw, client.clone(), request.as_bytes()).expect(what);
        assert_eq!(status_of(&answer), *expected, "{what}: {answer}");
        assert!(answer.contains("\"message\""), "{what}: {answer}");
    }
    // No privileged container exists, through any of those doors.
    let all = gw.engine.docker_ok(&["ps", "-aq"]);
    assert!(all.trim().is_empty(), "containers were created: {all}");

    // Each attempt is one completed, denied record (the lying
    // Content-Length leaves its body on the connection, where it is not
    // a request: hyper answers that itself and it never reaches policy).
    let records = gw.completed_calls();
    let denied: Vec<_> = records[before..]
        .iter()
        .filter(|r| r["user"] == "alice" && r["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), cases.len(), "{denied:#?}");
    for ((what, _, expected), record) in cases.iter().zip(&denied) {
        assert_eq!(record["status"], *expected, "{what}: {record}");
        assert!(
            record["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}"
        );
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Starts a container `long` as `bundle`'s user and opens a `docker exec`
/// into it that would run for minutes.
fn open_exec(gw: &GatewayProcess, bundle: &Path) -> std::process::Child {
    gw.docker_ok(
        bundle,
        &[
            "run",
            "-d",
            "--name",
            "long",
            "busybox:test",
            "sleep",
            "300",
        ],
    );
    let session = gw
        .docker_cmd(bundle)
        .args(["exec", "long", "sleep", "300"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    session
}

/// A client bundle for alice from a CA the gateway does not trust.
fn another_cas_bundle(gw: &GatewayProcess) -> std::path::PathBuf {
    let other = gw.engine.path("other-pki");
    let other = other.to_str().unwrap();
    common::moat_ok(&["--state-root", other, "certs", "init", "--ip", "127.0.0.1"]);
    let stranger = gw.engine.path("clients/stranger");
    common::moat_ok(&[
        "--state-root",
        other,
        "certs",
        "issue",
        "alice",
        "--group",
        "admin",
        "--out",
        stranger.to_str().unwrap(),
    ]);
    stranger
}

#[test]
fn handshakes_without_a_good_certificate_are_refused() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let ca = alice.join("ca.pem");
    let ping = get("/_ping");

    // Alice's own certificate works.
    let answer = raw(&gw, tls_client(Some(&alice), &ca), ping.as_bytes()).unwrap();
    assert_eq!(status_of(&answer), 200);

    // No certificate.
    assert!(raw(&gw, tls_client(None, &ca), ping.as_bytes()).is_err());

    // An expired certificate from the right CA.
    let pki = moat_certs::Pki::open(&gw.state().join("pki")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .issue(
            &moat_certs::Subject::new("old", &["developer".to_owned()]).unwrap(),
            moat_certs::Validity {
                not_before: now - time::Duration::hours(3),
                not_after: now - time::Duration::hours(1),
            },
        )
        .unwrap();
    let expired_dir = gw.engine.path("clients/expired");
    moat_certs::Bundle::write(&expired_dir, &expired).unwrap();
    assert!(raw(&gw, tls_client(Some(&expired_dir), &ca), ping.as_bytes()).is_err());

    // A certificate from another CA.
    let stranger = another_cas_bundle(&gw);
    assert!(raw(&gw, tls_client(Some(&stranger), &ca), ping.as_bytes()).is_err());

    // Revoked while the gateway runs: an open exec stream is closed and
    // new handshakes are refused, within seconds.
    let mut session = open_exec(&gw, &alice);
    gw.moat(&["certs", "revoke", "--user", "alice"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if session.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exec of a revoked user is still open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(raw(&gw, tls_client(Some(&alice), &ca), ping.as_bytes()).is_err());
    assert!(gw.log().contains("revoked"), "{}", gw.log());
}

#[test]
fn every_call_is_audited_once_and_the_log_verifies_until_tampered_with() {
    let mut gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    gw.docker_ok(&alice, &["run", "--rm", "busybox:test", "true"]);
    gw.docker_err(
        &alice,
        &["run", "--rm", "--privileged", "busybox:test", "true"],
    );
    gw.docker_ok(&alice, &["ps"]);
    gw.stop();

    // Every call completed exactly once; started records pair with them.
    let records = gw.audit_records();
    let completed: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "event" && r["stage"] == "completed")
        .collect();
    let mut ids: Vec<&str> = completed
        .iter()
        .map(|r| r["audit_id"].as_str().unwrap())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "a call completed twice");
    for started in records.iter().filter(|r| r["stage"] == "started") {
        assert!(
            ids.contains(&started["audit_id"].as_str().unwrap()),
            "{started}"
        );
    }
    let create = completed
        .iter()
        .find(|r| r["action"] == "container.create" && r["decision"] == "deny")
        .expect("the denied create is audited");
    let privileged = create["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["permission"] == "container.privileged")
        .expect("the privilege is a requirement of its own");
    assert_eq!(privileged["allowed"], false);
    assert_eq!(privileged["rule"], "default deny");
    assert!(records.iter().any(|r| r["kind"] == "checkpoint"));

    let dir = gw.audit_dir.to_str().unwrap().to_owned();
    let key = gw.state().join("pki/audit-pub.pem");
    let key = key.to_str().unwrap();
    let verify = |dir: &str| common::moat(&["audit", "verify", "--dir", dir, "--key", key]);
    let out = verify(&dir);
    assert!(out.status.success(), "{}", stderr_of(&out));

    let file = std::fs::read_dir(&gw.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() > 6);
    let tampered: [(&str, Vec<String>); 3] = [
        ("edited", {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l[3] = l[3].replacen("alice", "alicf", 1);
            l
        }),
        ("deleted", {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l.remove(3);
            l
        }),
        ("swapped", {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l.swap(3, 4);
            l
        }),
    ];
    for (what, content) in tampered {
        let copy = gw.engine.path(&format!("audit-{what}"));
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::write(
            copy.join(file.file_name().unwrap()),
            content.join("\n") + "\n",
        )
        .unwrap();
        let out = verify(copy.to_str().unwrap());
        assert!(!out.status.success(), "{what}: verify passed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        assert!(
            text.contains(":4"),
            "{what}: the first bad line (4) is not named: {text}"
        );
    }
}

#[test]
fn an_unwritable_audit_log_refuses_calls_and_leaves_the_engine_alone() {
    // The audit directory on a tiny filesystem that is then filled.
    let scratch = tempfile::tempdir().unwrap();
    let audit = scratch.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&audit)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(audit.clone());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let gw = GatewayProcess::start_with(&["--audit", audit.to_str().unwrap()]);
    let alice = gw.issue("alice", &["developer"]);
    gw.docker_ok(&alice, &["ps"]);

    // Fill the filesystem (as root, past the gateway's reach). The log's
    // last page may still hold a few records; calls fail once it is full.
    let filler = audit.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 << 10]);
    let mut refused = None;
    for _ in 0..50 {
        let out = gw.docker(&alice, &["ps"]);
        if !out.status.success() {
            refused = Some(stderr_of(&out));
            break;
        }
    }
    let refused = refused.expect("calls went on with a full audit filesystem");
    assert!(refused.contains("audit log cannot be written"), "{refused}");

    let out = gw.docker(
        &alice,
        &[
            "run",
            "-d",
            "--name",
            "ghost",
            "busybox:test",
            "sleep",
            "300",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("audit log cannot be written"),
        "{}",
        stderr_of(&out)
    );
    let all = gw.engine.docker_ok(&["ps", "-aq"]);
    assert!(
        all.trim().is_empty(),
        "a container was created without an audit record: {all}"
    );

    // Space again: calls go through and the log still verifies.
    std::fs::remove_file(&filler).unwrap();
    gw.docker_ok(&alice, &["ps"]);
    let key = gw.state().join("pki/audit-pub.pem");
    let out = common::moat(&[
        "audit",
        "verify",
        "--dir",
        audit.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn the_gateway_runs_unprivileged() {
    let gw = GatewayProcess::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert!(field("Uid:").iter().all(|uid| *uid != "0"), "{status}");
    assert!(field("Gid:").iter().all(|gid| *gid != "0"), "{status}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{caps} in {status}");
    }
    assert_eq!(field("NoNewPrivs:"), ["1"]);
    // And it still serves.
    let alice = gw.issue("alice", &["developer"]);
    gw.docker_ok(&alice, &["version"]);
}

#[test]
fn a_policy_edit_takes_effect_and_a_locked_user_is_cut_off() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let mut session = open_exec(&gw, &alice);

    // A broken edit is refused and the running policy stays.
    let policy = gw.state().join("policy/policy.csv");
    let original = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        format!("{original}\np, developer, no.such.permission, *, allow\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        gw.log().contains("keeping the running policy"),
        "{}",
        gw.log()
    );
    gw.docker_ok(&alice, &["ps"]);
    assert!(session.try_wait().unwrap().is_none());

    // Lock alice: deny everything to user:alice.
    std::fs::write(&policy, format!("{original}\np, user:alice, *, *, deny\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the locked user's exec is still open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = gw.docker_err(&alice, &["ps"]);
    assert!(err.contains("alice may not container.list"), "{err}");

    // Unlock.
    std::fs::write(&policy, &original).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.docker(&alice, &["ps"]).status.success() {
        assert!(Instant::now() < deadline, "alice is still locked out");
        std::thread::sleep(Duration::from_millis(200));
    }
    gw.engine.docker_ok(&["rm", "-f", "long"]);
}

/// A request with a JSON body over raw mutual TLS.
fn call(
    gw: &GatewayProcess,
    bundle: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(
        gw,
        tls_client(Some(bundle), &bundle.join("ca.pem")),
        request.as_bytes(),
    )
    .unwrap();
    let json = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .and_then(|b| serde_json::from_str(b.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    (status_of(&answer), json)
}

#[test]
fn the_admin_api_explains_and_replaces_the_policy_for_admins_only() {
    let gw = GatewayProcess::start();
    let root = gw.issue("root", &["admin"]);
    let alice = gw.issue("alice", &["developer"]);

    let (status, me) = call(&gw, &alice, "GET", "/moat/v1/whoami", "");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "alice");
    assert_eq!(me["roles"], serde_json::json!(["developer"]));

    let (status, _) = call(&gw, &alice, "GET", "/moat/v1/policy", "");
    assert_eq!(status, 403);

    let check = serde_json::json!({
        "user": "alice", "groups": ["developer"], "method": "POST",
        "path": "/v1.41/containers/create",
        "body": {"Image": "busybox:test", "HostConfig": {"Privileged": true}},
    });
    let (status, explained) = call(&gw, &root, "POST", "/moat/v1/check", &check.to_string());
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["allowed"], false, "{explained}");

    let (status, current) = call(&gw, &root, "GET", "/moat/v1/policy", "");
    assert_eq!(status, 200);
    let text = current["policy"].as_str().unwrap().to_owned();

    // A policy that does not validate is refused; the running one stays.
    let bad = serde_json::json!({ "policy": format!("{text}\np, developer, nope, *, allow\n") });
    let (status, answer) = call(&gw, &root, "PUT", "/moat/v1/policy", &bad.to_string());
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("running one stays")
    );
    assert_eq!(
        std::fs::read_to_string(gw.state().join("policy/policy.csv")).unwrap(),
        text
    );

    // A good one replaces it, on disk and in the running gateway.
    let good = serde_json::json!({ "policy": format!("{text}\np, developer, host.bind, /srv/shared/*, allow\n") });
    let (status, answer) = call(&gw, &root, "PUT", "/moat/v1/policy", &good.to_string());
    assert_eq!(status, 200, "{answer}");
    assert!(
        std::fs::read_to_string(gw.state().join("policy/policy.csv"))
            .unwrap()
            .contains("/srv/shared/*")
    );
    let puts: Vec<_> = gw
        .completed_calls()
        .into_iter()
        .filter(|r| r["action"] == "moat.policy.put")
        .collect();
    assert_eq!(puts.len(), 2, "each policy change is audited");

    // A change made from a stale read is refused, not silently lost.
    let stale = serde_json::json!({ "policy": text, "version": current["version"] });
    let (status, answer) = call(&gw, &root, "PUT", "/moat/v1/policy", &stale.to_string());
    assert_eq!(status, 409, "{answer}");
    assert!(
        std::fs::read_to_string(gw.state().join("policy/policy.csv"))
            .unwrap()
            .contains("/srv/shared/*")
    );
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An EdDSA JWT signed by `key` (an Ed25519 PEM private key) with openssl.
fn jwt(key: &Path, claims: serde_json::Value, dir: &Path) -> String {
    let header = base64url(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    let input = dir.join("jwt-input");
    std::fs::write(&input, format!("{header}.{payload}")).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!("{header}.{payload}.{}", base64url(&out.stdout))
}

#[test]
fn bearer_tokens_when_configured_and_only_then() {
    let scratch = tempfile::tempdir().unwrap();
    let key = scratch.path().join("jwt-key.pem");
    let public = scratch.path().join("jwt-pub.pem");
    let (ok, text) = common::run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = common::run(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let wrong_key = scratch.path().join("wrong-key.pem");
    assert!(
        common::run(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "ed25519",
                "-out",
                wrong_key.to_str().unwrap()
            ]
        )
        .0
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();

    let gw = GatewayProcess::start_with(&[
        "--jwt-key",
        public.to_str().unwrap(),
        "--jwt-issuer",
        "ci.example",
    ]);
    let alice = gw.issue("alice", &["developer"]);
    let ca = alice.join("ca.pem");
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let good = jwt(
        &key,
        serde_json::json!({"sub": "robot", "groups": ["developer"], "iss": "ci.example", "exp": exp}),
        scratch.path(),
    );

    // The real docker CLI with a CA but no certificate, and the token as a header.
    let config = gw.engine.path("robot-docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({"HttpHeaders": {"Authorization": format!("Bearer {good}")}}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("timeout")
        .args(["60", "docker", "--tls", "--tlscacert"])
        .arg(&ca)
        .args([
            "-H",
            &format!("tcp://{}", gw.address),
            "run",
            "--rm",
            "busybox:test",
            "echo",
            "robot",
        ])
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", gw.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "robot");
    let robot = gw
        .completed_calls()
        .into_iter()
        .find(|r| r["user"] == "robot" && r["action"] == "container.create")
        .expect("the token's caller is audited");
    assert_eq!(robot["auth"], "jwt");

    let ping_with = |token: &str| {
        let request = format!(
            "GET /_ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        status_of(&raw(&gw, tls_client(None, &ca), request.as_bytes()).unwrap())
    };
    assert_eq!(ping_with(&good), 200);
    let forged = jwt(
        &wrong_key,
        serde_json::json!({"sub": "robot", "iss": "ci.example", "exp": exp}),
        scratch.path(),
    );
    assert_eq!(ping_with(&forged), 401);
    let expired = jwt(
        &key,
        serde_json::json!({"sub": "robot", "iss": "ci.example", "exp": exp - 3600}),
        scratch.path(),
    );
    assert_eq!(ping_with(&expired), 401);
    let other_issuer = jwt(
        &key,
        serde_json::json!({"sub": "robot", "iss": "elsewhere", "exp": exp}),
        scratch.path(),
    );
    assert_eq!(ping_with(&other_issuer), 401);
    let no_token = raw(&gw, tls_client(None, &ca), get("/_ping").as_bytes()).unwrap();
    assert_eq!(status_of(&no_token), 401);

    // A certificate still works, and is still checked.
    gw.docker_ok(&alice, &["version"]);
    let stranger = another_cas_bundle(&gw);
    assert!(
        raw(
            &gw,
            tls_client(Some(&stranger), &ca),
            get("/_ping").as_bytes()
        )
        .is_err()
    );
}

#[test]
fn a_dry_run_policy_records_what_it_would_deny_and_denies_nothing() {
    let gw = GatewayProcess::start();
    let alice = gw.issue("alice", &["developer"]);
    let policy = gw.state().join("policy");
    let dry = policy.join("dry-run");
    std::fs::create_dir_all(&dry).unwrap();
    std::fs::copy(policy.join("model.conf"), dry.join("model.conf")).unwrap();
    let stricter: String = std::fs::read_to_string(policy.join("policy.csv"))
        .unwrap()
        .lines()
        .filter(|l| *l != "p, developer, container.create, *, allow")
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dry.join("policy.csv"), stricter).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("dry run of the policy") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    gw.docker_ok(&alice, &["run", "--rm", "busybox:test", "true"]);
    gw.docker_ok(&alice, &["ps"]);
    let calls = gw.completed_calls();
    let create = calls
        .iter()
        .find(|r| r["action"] == "container.create")
        .unwrap();
    assert_eq!(create["decision"], "allow");
    assert_eq!(create["dry_run"]["allowed"], false, "{create}");
    assert!(
        create["dry_run"]["denied"][0]
            .as_str()
            .unwrap()
            .starts_with("container.create (default deny)"),
        "{create}"
    );
    let list = calls
        .iter()
        .find(|r| r["action"] == "container.list")
        .unwrap();
    assert!(list.get("dry_run").is_none(), "{list}");

    // Ending the dry run ends the annotations.
    std::fs::remove_dir_all(&dry).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("dry run ended") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_enrollment_port_serves_enrollment_and_nothing_else() {
    let signer = tempfile::tempdir().unwrap();
    let socket = signer.path().join("absent.sock");
    let gw = GatewayProcess::start_with(&[
        "--enroll-listen",
        "127.0.0.1:0",
        "--signer",
        &format!("unix://{}", socket.display()),
    ]);
    let alice = gw.issue("alice", &["developer"]);
    let ca = alice.join("ca.pem");
    let address = gw.enroll_address().expect("the enrollment port is logged");
    let enroll_port = |request: &str| -> String {
        let tcp = TcpStream::connect(&address).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(tls_client(None, &ca), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };

    // No certificate needed here, and the CA is handed out for pinning.
    let answer = enroll_port(&get("/moat/v1/ca"));
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("BEGIN CERTIFICATE"));

    // Nothing of the Docker API, nor the admin API, is reachable here.
    for path in [
        "/_ping",
        "/v1.41/containers/json",
        "/moat/v1/whoami",
        "/moat/v1/policy",
    ] {
        let answer = enroll_port(&get(path));
        assert_eq!(status_of(&answer), 403, "{path}: {answer}");
    }
    let create = r#"{"Image":"busybox:test","HostConfig":{"Privileged":true}}"#;
    let answer = enroll_port(&format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
        create.len()
    ));
    assert_eq!(status_of(&answer), 403, "{answer}");
    assert!(gw.engine.docker_ok(&["ps", "-aq"]).trim().is_empty());

    // The signer is down: enrollment is refused, never improvised.
    let body = r#"{"token":"00","csr":"x"}"#;
    let enroll = format!(
        "POST /moat/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(status_of(&enroll_port(&enroll)), 503);

    // Malformed attempts count as failures; the sixth within a minute is
    // refused without being looked at.
    let junk = "POST /moat/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    for _ in 0..5 {
        assert_eq!(status_of(&enroll_port(junk)), 400);
    }
    assert_eq!(status_of(&enroll_port(junk)), 429);

    // Every attempt is audited.
    let attempts = gw
        .completed_calls()
        .into_iter()
        .filter(|r| r["path"] == "/moat/v1/enroll")
        .count();
    assert_eq!(attempts, 7);
    // And renewal on the main port needs the signer too.
    let (status, answer) = call(&gw, &alice, "POST", "/moat/v1/renew", r#"{"csr":"x"}"#);
    assert_eq!(status, 503, "{answer}");
}

#[test]
fn limits_answer_overload_and_the_gateway_keeps_serving() {
    let gw = GatewayProcess::start_with(&[
        "--user-rate",
        "1",
        "--user-burst",
        "3",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "2",
        "--max-connections",
        "4",
    ]);
    let alice = gw.issue("alice", &["developer"]);
    let ca = alice.join("ca.pem");
    let client = tls_client(Some(&alice), &ca);

    // Rate: a burst of 3, then 429 with the reason.
    let statuses: Vec<u16> = (0..5)
        .map(|_| status_of(&raw(&gw, client.clone(), get("/_ping").as_bytes()).unwrap()))
        .collect();
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");

    // Slowloris: headers never finished are cut after the header timeout.
    let started = Instant::now();
    let answer =
        raw(&gw, client.clone(), b"GET /_ping HTTP/1.1\r\nHost: x\r\n").unwrap_or_default();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(!answer.contains("200 OK"), "{answer}");

    // Idle: a connection that says nothing is closed (by the header
    // timeout before a first request, the idle timeout after one).
    let tcp = TcpStream::connect(&gw.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut idle = rustls::StreamOwned::new(conn, tcp);
    idle.flush().unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let _ = idle.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(9),
        "{waited:?}"
    );

    // Connections over the limit are closed at once; the gateway goes on.
    let held: Vec<TcpStream> = (0..6)
        .filter_map(|_| TcpStream::connect(&gw.address).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        status_of(&raw(&gw, client, get("/_ping").as_bytes()).unwrap()),
        200
    );
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(gw.pid() as i32), None).is_ok());
}

/// The SHA-256 of the certificate the gateway presents, as openssl sees it.
fn served_fingerprint(gw: &GatewayProcess, bundle: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {} -cert {b}/cert.pem -key {b}/key.pem -CAfile {b}/ca.pem </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256",
            gw.address,
            b = bundle.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn file_fingerprint(path: &Path) -> String {
    let (ok, text) = common::run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    text.trim().to_owned()
}

#[test]
fn a_renewed_server_certificate_is_served_without_a_restart() {
    let mut signer = common::signer::SignerProcess::prepare();
    let gw = GatewayProcess::start_with(&[
        "--enroll-listen",
        "127.0.0.1:0",
        "--signer",
        &signer.address(),
    ]);
    signer.start(&gw.state());
    let alice = gw.issue("alice", &["developer"]);
    let server_cert = gw.state().join("pki/server-cert.pem");
    let before = file_fingerprint(&server_cert);
    assert_eq!(served_fingerprint(&gw, &alice), before);

    // The gateway cannot read the new key itself (it dropped root): the
    // signer hands it over, and only for the certificate on disk.
    gw.moat(&[
        "certs",
        "renew-server",
        "--ip",
        "127.0.0.1",
        "--host",
        "moat.test",
    ]);
    let after = file_fingerprint(&server_cert);
    assert_ne!(before, after);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_fingerprint(&gw, &alice) != after {
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    gw.docker_ok(&alice, &["version"]);
}
