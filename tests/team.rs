//! A team's day with moat, end to end: an admin shapes who may do what
//! with `moat policy`, a developer works through the gateway with the real
//! docker CLI, `moat policy check` predicts every decision the gateway
//! makes, a lock cuts the developer off mid-session, and the audit log
//! holds exactly the calls that were made and proves it was not touched.

mod common;

use std::time::{Duration, Instant};

use common::gateway::GatewayProcess;

/// The docker flag sets the agreement test combines: each changes what a
/// `docker create` needs.
const FLAGS: &[&str] = &[
    "",
    "--privileged",
    "-v /:/host",
    "-v /srv/shared/data:/data",
    "--mount type=bind,source=/srv/shared/logs,target=/logs",
    "--cap-add NET_ADMIN",
    "--cap-add SYS_ADMIN",
    "--net host",
    "--pid host",
    "--ipc host",
    "--uts host",
    "--userns host",
    "--security-opt seccomp=unconfined",
    "--security-opt no-new-privileges",
    "--device /dev/null",
    "--read-only",
    "-e TOKEN=x",
    "--memory 32m",
    "-u 1000",
    "--cgroup-parent /custom",
];

/// 50 flag combinations: every flag alone, then pairs in a fixed order.
fn combinations() -> Vec<String> {
    let mut out: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    'pairs: for (i, a) in FLAGS.iter().enumerate().skip(1) {
        for b in FLAGS.iter().skip(i + 1).step_by(3) {
            if out.len() == 50 {
                break 'pairs;
            }
            out.push(format!("{a} {b}"));
        }
    }
    assert_eq!(out.len(), 50);
    out
}

#[test]
fn policy_check_agrees_with_the_gateway_and_the_audit_log_holds_exactly_the_calls() {
    let gw = GatewayProcess::start();
    let state = gw.state();
    let state_arg = state.to_str().unwrap();
    let bob = gw.issue("bob", &["developer"]);

    // The admin gives bob a role of his own on top of his group's.
    common::moat_ok(&[
        "--state-root",
        state_arg,
        "policy",
        "role",
        "create",
        "shared-data",
        "--allow",
        "host.bind:/srv/shared/*",
        "--allow",
        "container.cap_add:NET_ADMIN",
    ]);
    common::moat_ok(&[
        "--state-root",
        state_arg,
        "policy",
        "bind",
        "bob",
        "shared-data",
    ]);
    // The gateway picks the change up by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("reloaded the policy") {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut made = 0;
    for flags in combinations() {
        let mut docker: Vec<&str> = vec!["create"];
        docker.extend(flags.split_whitespace());
        docker.extend(["busybox:test", "true"]);

        let mut check = vec![
            "--state-root",
            state_arg,
            "policy",
            "check",
            "bob",
            "-g",
            "developer",
            "--",
            "docker",
        ];
        check.extend(docker.iter().copied());
        let predicted = common::moat(&check);
        let predicted_allowed = match predicted.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!(
                "policy check {flags:?}: {other:?} {}",
                String::from_utf8_lossy(&predicted.stderr)
            ),
        };

        let out = gw.docker(&bob, &docker);
        made += 1;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let refused = stderr.contains("bob may not");
        assert_eq!(
            predicted_allowed,
            !refused,
            "{flags:?}: check said {}, the gateway {}:\n{}{stderr}",
            if predicted_allowed {
                "allowed"
            } else {
                "denied"
            },
            if refused { "refused" } else { "did not refuse" },
            String::from_utf8_lossy(&predicted.stdout),
        );
    }
    // Each docker create is a _ping then the create (or the create alone
    // when the CLI reuses its negotiated version): count what the log holds
    // for bob against what the gateway saw.
    let creates: Vec<_> = gw
        .completed_calls()
        .into_iter()
        .filter(|r| r["user"] == "bob" && r["action"] == "container.create")
        .collect();
    assert_eq!(
        creates.len(),
        made,
        "one completed create record per docker create"
    );

    // `moat audit search` finds exactly those calls.
    let found = common::moat_ok(&[
        "--state-root",
        state_arg,
        "audit",
        "search",
        "--user",
        "bob",
        "--action",
        "container.create",
        "--stage",
        "completed",
        "--output",
        "json",
    ]);
    assert_eq!(found.lines().count(), made, "{found}");
    let denied = common::moat_ok(&[
        "--state-root",
        state_arg,
        "audit",
        "search",
        "--user",
        "bob",
        "--action",
        "container.create",
        "--decision",
        "deny",
        "--output",
        "json",
    ]);
    let denied_in_log = creates.iter().filter(|r| r["decision"] == "deny").count();
    assert_eq!(denied.lines().count(), denied_in_log);
    assert!(
        denied_in_log > 10 && denied_in_log < made,
        "{denied_in_log} of {made}"
    );

    // bob is locked: his open interactive exec and his next call are cut.
    gw.docker_ok(
        &bob,
        &[
            "run",
            "-d",
            "--name",
            "bobs",
            "busybox:test",
            "sleep",
            "300",
        ],
    );
    let mut session = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "DOCKER_HOST=tcp://{} DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={} DOCKER_CONFIG={} docker exec -it bobs sh",
            gw.address,
            bob.display(),
            gw.engine.path("docker-config").display()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        session.try_wait().unwrap().is_none(),
        "the exec did not start"
    );
    common::moat_ok(&["--state-root", state_arg, "policy", "lock", "bob"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "bob's docker exec -it is still open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = gw.docker_err(&bob, &["ps"]);
    assert!(err.contains("bob may not"), "{err}");
    common::moat_ok(&["--state-root", state_arg, "policy", "unlock", "bob"]);
    gw.engine.docker_ok(&["rm", "-f", "bobs"]);

    // The log of all of it verifies (tampering is tried in tests/gateway.rs).
    let verify = common::moat(&["--state-root", state_arg, "audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
