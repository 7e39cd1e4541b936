//! Enrollment with real processes: `moat certs token` makes a one-time
//! token, `moat certs signer` (root, on a Unix socket) signs for it, and
//! `moat login` gets a certificate through the gateway's enrollment port,
//! after which the real docker CLI works through the gateway with it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::gateway::GatewayProcess;
use common::signer::SignerProcess;
use serde_json::{Value, json};

/// A temporary state root with a PKI for 127.0.0.1.
fn pki() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let state = dir.path().join("state");
    common::moat_ok(&[
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "init",
        "--ip",
        "127.0.0.1",
    ]);
    (dir, state)
}

/// `moat certs token USER --group G --output json [EXTRA...]`.
fn token(state: &Path, user: &str, group: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "token",
        user,
        "--group",
        group,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&common::moat_ok(&args)).unwrap()
}

fn ca_fingerprint(state: &Path) -> String {
    let ca = std::fs::read_to_string(state.join("pki/ca.pem")).unwrap();
    let der = pem::parse(ca).unwrap();
    moat_certs::inspect::fingerprint(der.contents())
}

fn csr() -> String {
    moat_certs::enroll::key_and_csr().unwrap().1
}

#[test]
fn a_token_is_shown_once_with_the_line_that_uses_it() {
    let (_dir, state) = pki();
    let pin = ca_fingerprint(&state);
    let table = common::moat_ok(&[
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "token",
        "bob",
        "--group",
        "developer",
    ]);
    let line = table
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("moat login "))
        .unwrap_or_else(|| panic!("{table}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[2], "https://127.0.0.1:2377", "{line}");
    assert_eq!(words[3], "--token");
    assert_eq!(words[4].len(), 64);
    assert_eq!(&words[5..], ["--ca-pin", pin.as_str()]);

    let json = token(
        &state,
        "bob",
        "developer",
        &[
            "--ttl",
            "1h",
            "--enroll-url",
            "https://moat.example.com:9443",
        ],
    );
    assert_eq!(json["user"], "bob");
    assert_eq!(json["groups"], json!(["developer"]));
    assert_eq!(json["ca_pin"], pin.as_str());
    let secret = json["token"].as_str().unwrap();
    assert!(json["login"].as_str().unwrap().starts_with(&format!(
        "moat login https://moat.example.com:9443 --token {secret} "
    )));

    // Stored hashed, privately; never longer than a day.
    let tokens = state.join("pki/tokens.json");
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(!stored.contains(secret) && !stored.contains(words[4]));
    assert_eq!(common::mode(&tokens), 0o600);
    let out = common::moat(&[
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "token",
        "bob",
        "--ttl",
        "25h",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("over the maximum"));
}

#[test]
fn the_signer_signs_for_tokens_and_renewals_and_nothing_else() {
    let (_dir, state) = pki();
    let mut signer = SignerProcess::prepare();
    signer.start(&state);

    // Only root and the gateway's group may connect.
    let meta = std::fs::metadata(&signer.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), 0);
    let group = nix::unistd::Group::from_name("moat-gateway")
        .unwrap()
        .expect("the signer made the gateway's group");
    assert_eq!(meta.gid(), group.gid.as_raw());

    let secret = token(&state, "bob", "developer", &[])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let enroll = json!({"op": "enroll", "token": secret, "csr": csr()});
    let signed = signer.call(&enroll);
    assert_eq!(signed["user"], "bob", "{signed}");
    assert_eq!(signed["groups"], json!(["developer"]));
    assert!(
        signed["cert"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        signed["ca"].as_str().unwrap(),
        std::fs::read_to_string(state.join("pki/ca.pem")).unwrap()
    );
    let serial = signed["serial"].as_str().unwrap().to_owned();
    assert!(signed["not_after"].as_str().unwrap().ends_with('Z'));

    // Once only.
    let again = signer.call(&enroll);
    assert!(
        again["error"].as_str().unwrap().contains("already used"),
        "{again}"
    );
    let unknown = signer.call(&json!({"op": "enroll", "token": "00".repeat(32), "csr": csr()}));
    assert!(unknown["error"].as_str().unwrap().contains("unknown"));

    // Renewal: for the certificate's own subject, as the index has it.
    let renew = |user: &str, groups: &[&str], serial: &str| {
        signer.call(&json!({
            "op": "renew", "serial": serial, "user": user, "groups": groups, "csr": csr()
        }))
    };
    let renewed = renew("bob", &["developer"], &serial);
    assert_eq!(renewed["user"], "bob", "{renewed}");
    assert_ne!(renewed["serial"], serial.as_str());
    for refused in [
        renew("alice", &["developer"], &serial),
        renew("bob", &["admin"], &serial),
        renew("bob", &["developer"], "0123456789ABCDEF"),
    ] {
        assert!(refused["error"].is_string(), "{refused}");
        assert!(refused.get("cert").is_none());
    }
    common::moat_ok(&[
        "--state-root",
        state.to_str().unwrap(),
        "certs",
        "revoke",
        &serial,
    ]);
    let revoked = renew("bob", &["developer"], &serial);
    assert!(revoked["error"].as_str().unwrap().contains("revoked"));

    // Requests it will not read: oversized, malformed, another operation.
    let huge = signer.exchange(&vec![b'x'; 70 * 1024]);
    assert!(huge["error"].as_str().unwrap().contains("64 KiB"), "{huge}");
    let garbage = signer.exchange(b"{\"op\": \"enroll\", \"token\": ");
    assert!(garbage["error"].as_str().unwrap().contains("malformed"));
    let issue = signer.call(&json!({"op": "issue", "user": "root", "groups": ["admin"]}));
    assert!(issue["error"].is_string());

    // An idle client is cut off.
    let started = std::time::Instant::now();
    let mut idle = std::os::unix::net::UnixStream::connect(&signer.socket).unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut idle, &mut answer).unwrap();
    assert!(answer.contains("in time"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // Its log says what happened, and never the token.
    let log = signer.log();
    assert!(log.contains("op=enroll outcome=signed"), "{log}");
    assert!(log.contains("op=renew outcome=refused"), "{log}");
    assert!(!log.contains(&secret), "{log}");

    assert!(signer.stop().success());
    assert!(!signer.socket.exists(), "the socket is removed on stop");
}

#[test]
fn the_signer_runs_as_root_only() {
    let (dir, state) = pki();
    let out = Command::new(common::moat_bin())
        .arg("--state-root")
        .arg(&state)
        .args(["certs", "signer", "--socket"])
        .arg(dir.path().join("enroll.sock"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runs as root"), "{stderr}");
}

/// `moat ARGS...` as a teammate on their own machine: their own docker
/// config, no state root.
fn teammate(docker_config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::moat_bin())
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("MOAT_STATE_ROOT")
        .env_remove("MOAT_BUNDLE")
        .env_remove("MOAT_LOGIN_TOKEN")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn serial_of(bundle: &Path) -> String {
    let cert = std::fs::read_to_string(bundle.join("cert.pem")).unwrap();
    let der = pem::parse(cert).unwrap();
    moat_certs::CertSummary::from_der(der.contents())
        .unwrap()
        .serial
}

/// Removes the docker context when the test ends, however it ends.
struct Context<'a> {
    name: String,
    docker_config: &'a Path,
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["context", "rm", "-f", &self.name])
            .env("DOCKER_CONFIG", self.docker_config)
            .output();
    }
}

#[test]
fn a_teammate_logs_in_with_a_token_and_docker_works_through_the_gateway() {
    let mut signer = SignerProcess::prepare();
    let gw = GatewayProcess::start_with(&[
        "--enroll-listen",
        "127.0.0.1:0",
        "--signer",
        &signer.address(),
    ]);
    signer.start(&gw.state());
    let url = format!(
        "https://{}",
        gw.enroll_address()
            .unwrap_or_else(|| panic!("no enrollment port:\n{}", gw.log()))
    );
    let state = gw.state();
    let docker_config = gw.engine.path("bob-docker");
    let bundle = gw.engine.path("bob-moat");
    let bundle_text = bundle.to_str().unwrap();
    let context = Context {
        name: format!("moat-test-{}", common::random_hex(4)),
        docker_config: &docker_config,
    };
    let login = |token: &str, pin: &str| {
        teammate(
            &docker_config,
            &[
                "login",
                &url,
                "--token",
                token,
                "--ca-pin",
                pin,
                "--out",
                bundle_text,
                "--context",
                &context.name,
            ],
        )
    };

    // The admin makes a token; bob logs in with the line it prints.
    let made = token(&state, "bob", "developer", &["--enroll-url", &url]);
    let secret = made["token"].as_str().unwrap();
    let pin = made["ca_pin"].as_str().unwrap();
    let out = login(secret, pin);
    assert!(out.status.success(), "{}\n{}", text(&out), gw.log());
    assert!(
        text(&out).contains("Logged in as bob (groups: developer)"),
        "{}",
        text(&out)
    );
    assert_eq!(common::mode(&bundle.join("key.pem")), 0o600);
    let first_serial = serial_of(&bundle);

    // docker, through the gateway, as bob.
    let docker = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["--kill-after=5", "60", "docker", "--context", &context.name])
            .args(args)
            .env("DOCKER_CONFIG", &docker_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            text(&out),
            gw.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        docker(&["run", "--rm", "busybox:test", "echo", "hi"]).trim(),
        "hi"
    );
    assert!(
        gw.completed_calls()
            .iter()
            .any(|r| r["user"] == "bob" && r["action"] == "container.create"),
        "the gateway saw bob"
    );

    // The token is spent.
    let out = login(secret, pin);
    assert!(!out.status.success());
    assert!(text(&out).contains("already used"), "{}", text(&out));

    // A wrong pin: nothing is sent, so the token is not spent either.
    let fresh = token(&state, "carol", "developer", &[]);
    let fresh_secret = fresh["token"].as_str().unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = login(fresh_secret, &wrong);
    assert!(!out.status.success());
    assert!(text(&out).contains("not the pin"), "{}", text(&out));
    assert_eq!(serial_of(&bundle), first_serial, "the bundle is untouched");
    // The token is still good: with the CA file instead of a pin, carol
    // enrolls (into her own directory, without a context).
    let carol = gw.engine.path("carol-moat");
    let out = teammate(
        &docker_config,
        &[
            "login",
            &url,
            "--token",
            fresh_secret,
            "--ca",
            state.join("pki/ca.pem").to_str().unwrap(),
            "--out",
            carol.to_str().unwrap(),
            "--no-context",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Logged in as carol"), "{}", text(&out));

    // An expired token.
    let short = token(&state, "dave", "developer", &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = login(short["token"].as_str().unwrap(), pin);
    assert!(!out.status.success());
    assert!(text(&out).contains("expired"), "{}", text(&out));

    // Renewal: nothing to do while the certificate is young, unless forced;
    // then a new certificate for the same user, and docker follows it.
    let renew = |extra: &[&str]| {
        let mut args = vec!["login", "--out", bundle_text];
        args.extend_from_slice(extra);
        teammate(&docker_config, &args)
    };
    let out = renew(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to renew"), "{}", text(&out));
    assert_eq!(serial_of(&bundle), first_serial);
    let out = renew(&["--force"]);
    assert!(out.status.success(), "{}\n{}", text(&out), gw.log());
    assert!(text(&out).contains("Renewed as bob"), "{}", text(&out));
    let second_serial = serial_of(&bundle);
    assert_ne!(second_serial, first_serial);
    assert_eq!(
        docker(&["run", "--rm", "busybox:test", "echo", "again"]).trim(),
        "again"
    );
    let listed = gw.moat(&["certs", "list", "--output", "json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let renewed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial"] == second_serial.as_str())
        .expect("the renewed certificate is in the index");
    assert_eq!(renewed["user"], "bob");
    assert_eq!(renewed["groups"], json!(["developer"]));

    // whoami: the gateway's view of the renewed certificate.
    let out = teammate(
        &docker_config,
        &["whoami", "--bundle", bundle_text, "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["user"], "bob");
    assert_eq!(me["groups"], json!(["developer"]));
    assert!(
        me["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("developer")),
        "{me}"
    );
    assert_eq!(me["serial"], second_serial.as_str());
    assert!(me["not_after"].is_string());
    let out = teammate(&docker_config, &["whoami", "--bundle", bundle_text]);
    assert!(text(&out).contains("roles:") && text(&out).contains("developer"));

    // moat env: the same bundle for tools that read DOCKER_*.
    let out = teammate(&docker_config, &["env", "--bundle", bundle_text]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let exports: Vec<(&str, &str)> = line
        .trim()
        .strip_prefix("export ")
        .unwrap_or_else(|| panic!("{line}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(exports.len(), 3, "{line}");
    let ps = Command::new("timeout")
        .args(["60", "docker", "ps"])
        .envs(exports.iter().copied())
        .env("DOCKER_CONFIG", &docker_config)
        .env_remove("DOCKER_CONTEXT")
        .output()
        .unwrap();
    assert!(ps.status.success(), "{}", text(&ps));
}
