use moat_api::Action;

use super::*;
use crate::derive::derive_request;
use crate::derive::tests::{developer_body, everything_body};
use crate::permission::Permission as P;
use crate::policy::{DEFAULT_MODEL, DEFAULT_POLICY};

fn default_enforcer() -> Enforcer {
    Enforcer::new(Policy::builtin()).unwrap()
}

fn enforcer(policy: &str) -> Enforcer {
    Enforcer::new(Policy::from_text(DEFAULT_MODEL, policy).unwrap()).unwrap()
}

fn group(user: &str, group: &str) -> Identity {
    Identity::new(user, [group])
}

fn request(method: &str, target: &str, body: Option<&str>) -> Vec<Requirement> {
    derive_request(method, target, body.map(str::as_bytes))
        .unwrap()
        .1
}

/// `requirement → allowed` for each decision.
fn decisions(verdict: &Verdict) -> Vec<(String, bool)> {
    verdict
        .decisions
        .iter()
        .map(|d| (d.requirement.to_string(), d.allowed))
        .collect()
}

/// The line number of `text` in the built-in policy.
fn default_line(text: &str) -> usize {
    DEFAULT_POLICY
        .lines()
        .position(|l| l == text)
        .unwrap_or_else(|| panic!("{text:?} is not in the default policy"))
        + 1
}

#[test]
fn every_privilege_is_refused_to_all_but_admin() {
    let e = default_enforcer();
    let everything = request("POST", "/containers/create", Some(&everything_body()));
    for role in ["viewer", "developer", "operator"] {
        let verdict = e.decide(&group("alice", role), &everything);
        assert!(!verdict.allowed, "{role}");
        let allowed: Vec<String> = decisions(&verdict)
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(r, _)| r)
            .collect();
        let want: &[&str] = match role {
            "viewer" => &[],
            // Creating and the library image are fine; every privilege is not.
            _ => &["container.create", "image.use:docker.io/library/alpine"],
        };
        assert_eq!(allowed, want, "{role}");
        for decision in verdict.denials() {
            assert_eq!(decision.rule, Rule::DefaultDeny, "{role}: {decision}");
        }
    }
    let verdict = e.decide(&group("root", "admin"), &everything);
    assert!(verdict.allowed);
    let admin_line = default_line("p, admin, *, *, allow");
    for decision in &verdict.decisions {
        assert!(
            matches!(&decision.rule, Rule::Line(line) if line.number == admin_line),
            "{decision}"
        );
    }
}

#[test]
fn a_developer_runs_library_images_with_volumes() {
    let e = default_enforcer();
    let alice = group("alice", "developer");
    let run = request(
        "POST",
        "/containers/create?name=web",
        Some(&developer_body()),
    );
    let verdict = e.decide(&alice, &run);
    assert_eq!(
        decisions(&verdict),
        vec![
            ("container.create:web".into(), true),
            ("image.use:docker.io/library/busybox".into(), true),
            ("volume.use:data".into(), true),
            ("host.bind:/tmp/moat-shared/x".into(), false),
        ]
    );
    assert_eq!(
        verdict.decisions[1].rule.to_string(),
        format!(
            "policy.csv:{}: p, developer, image.use, docker.io/library/*, allow",
            default_line("p, developer, image.use, docker.io/library/*, allow")
        )
    );

    // The allow-list of host paths is one line away.
    let line = "p, developer, host.bind, /tmp/moat-shared/*, allow";
    let e = enforcer(&format!("{DEFAULT_POLICY}{line}\n"));
    let verdict = e.decide(&alice, &run);
    assert!(verdict.allowed, "{:?}", decisions(&verdict));
    assert_eq!(
        verdict.decisions[3].rule.to_string(),
        format!("policy.csv:{}: {line}", DEFAULT_POLICY.lines().count() + 1)
    );
    for (path, allowed) in [
        ("/tmp/moat-shared/a/b", true),
        ("/tmp/moat-shared", false),
        ("/tmp/moat-sharedevil", false),
        ("/etc", false),
    ] {
        assert_eq!(
            e.check(&alice, &Requirement::new(P::HostBind, path))
                .allowed,
            allowed,
            "{path}"
        );
    }

    let e = default_enforcer();
    for (requirement, allowed) in [
        (Requirement::new(P::HostBind, "/tmp/moat-shared/x"), false),
        (
            Requirement::new(P::ImageUse, "docker.io/library/busybox"),
            true,
        ),
        (
            Requirement::new(P::ImageUse, "quay.io/library/busybox"),
            false,
        ),
        (Requirement::new(P::ImageUse, "docker.io/alice/app"), false),
        (Requirement::new(P::ImageUse, "sha256:abcd"), false),
        (
            Requirement::new(P::ImagePull, "docker.io/library/alpine"),
            true,
        ),
        (Requirement::new(P::ExecRoot, "web"), true),
        (Requirement::new(P::ExecPrivileged, "web"), false),
        (Requirement::new(Action::ContainerLogs, "web"), true),
        (
            Requirement::new(Action::ContainerAttachWebsocket, "web"),
            false,
        ),
        // Prune is theirs: the gateway narrows it to their own containers.
        (Requirement::new(Action::ContainerPrune, "*"), true),
        (Requirement::flag(P::ContainerAny), false),
        (Requirement::flag(P::HostUserns), false),
        (Requirement::flag(P::HostNetwork), false),
        (Requirement::new(P::CapAdd, "NET_ADMIN"), false),
        (Requirement::new(P::HostPortPrivileged, "80"), false),
        (Requirement::flag(Action::MoatPolicyGet), false),
    ] {
        assert_eq!(
            e.check(&alice, &requirement).allowed,
            allowed,
            "{requirement}"
        );
    }
}

#[test]
fn viewers_read_but_never_see_inside() {
    let e = default_enforcer();
    let vic = group("vic", "viewer");
    for (method, target, allowed) in [
        ("GET", "/containers/json", true),
        ("GET", "/containers/web/json", true),
        ("GET", "/_ping", true),
        ("GET", "/version", true),
        ("GET", "/info", true),
        ("GET", "/events", true),
        ("GET", "/images/json", true),
        ("GET", "/containers/web/logs", false),
        ("POST", "/containers/web/attach", false),
        ("GET", "/containers/web/export", false),
        ("GET", "/containers/web/archive?path=/etc", false),
        ("POST", "/containers/web/stop", false),
        ("GET", "/images/alpine/get", false),
    ] {
        let verdict = e.decide(&vic, &request(method, target, None));
        assert_eq!(verdict.allowed, allowed, "{method} {target}");
    }
    let exec = r#"{"User":"","Cmd":["sh"]}"#;
    assert!(
        !e.decide(&vic, &request("POST", "/containers/web/exec", Some(exec)))
            .allowed
    );
    assert!(e.check(&vic, &Requirement::flag(P::ContainerAny)).allowed);
}

#[test]
fn operators_act_on_everyone_but_stay_unprivileged() {
    let e = default_enforcer();
    let olga = group("olga", "operator");
    assert_eq!(e.roles(&olga), vec!["developer", "operator"]);
    for (requirement, allowed) in [
        (Requirement::flag(P::ContainerAny), true),
        (Requirement::flag(Action::ContainerPrune), true),
        (
            Requirement::new(Action::ContainerLogs, "someone-elses"),
            true,
        ),
        (Requirement::new(P::ImageUse, "quay.io/team/app"), true),
        (Requirement::new(P::ImageImport, "-"), true),
        (
            Requirement::new(P::ImageImport, "http://169.254.169.254/"),
            false,
        ),
        (
            Requirement::new(P::BuildRemote, "https://example.com/ctx.tar"),
            false,
        ),
        (Requirement::new(P::HostBind, "/tmp/moat-shared/x"), false),
        (Requirement::new(P::VolumeUse, "someone-elses"), true),
        (Requirement::flag(P::Privileged), false),
        (Requirement::new(P::CapAdd, "SYS_ADMIN"), false),
        (Requirement::flag(P::HostPid), false),
        (Requirement::flag(P::SeccompUnconfined), false),
        (Requirement::new(P::ExecPrivileged, "web"), false),
        (Requirement::new(P::VolumeDriver, "local"), false),
        (Requirement::flag(Action::PluginPull), false),
        (Requirement::flag(Action::MoatPolicyPut), false),
    ] {
        assert_eq!(
            e.check(&olga, &requirement).allowed,
            allowed,
            "{requirement}"
        );
    }
}

#[test]
fn admins_may_change_the_policy() {
    let e = default_enforcer();
    let root = group("root", "admin");
    for action in [
        Action::MoatPolicyPut,
        Action::MoatReload,
        Action::MoatEnroll,
        Action::SwarmInit,
    ] {
        assert!(
            e.check(&root, &Requirement::flag(action)).allowed,
            "{action}"
        );
    }
}

#[test]
fn identities_bind_to_roles_by_group_or_one_by_one() {
    let e = enforcer(
        "p, developer, container.create, *, allow\n\
         p, operator, container.prune, *, allow\n\
         g, group:dev, developer\n\
         g, user:bob, operator\n",
    );
    let create = Requirement::flag(Action::ContainerCreate);
    let prune = Requirement::flag(Action::ContainerPrune);
    assert!(e.check(&group("alice", "dev"), &create).allowed);
    assert!(!e.check(&group("alice", "dev"), &prune).allowed);
    assert!(
        e.check(&Identity::new("bob", Vec::<String>::new()), &prune)
            .allowed
    );
    assert!(
        !e.check(&Identity::new("bob", Vec::<String>::new()), &create)
            .allowed
    );
    // Groups and roles are different names: a group called operator is not the role.
    assert!(!e.check(&group("carol", "operator"), &prune).allowed);
    // Nor is a user called developer.
    assert!(
        !e.check(&Identity::new("developer", Vec::<String>::new()), &create)
            .allowed
    );
    assert!(!e.check(&group("mallory", "nobody"), &create).allowed);
    assert_eq!(
        e.roles(&Identity::new("bob", ["dev"])),
        vec!["developer", "operator"]
    );
}

#[test]
fn a_person_called_admin_is_not_the_admin_role() {
    let e = default_enforcer();
    let verdict = e.decide(
        &Identity::new("admin", Vec::<String>::new()),
        &[Requirement::flag(Action::SystemPing)],
    );
    assert!(!verdict.allowed);
    assert!(
        e.roles(&Identity::new("admin", ["admin"]))
            .contains(&"admin".to_owned())
    );
}

#[test]
fn deny_wins_within_a_role_and_across_groups() {
    let policy = "p, developer, host.bind, /tmp/*, allow\n\
                  p, developer, host.bind, /tmp/secret/*, deny\n\
                  p, contractor, host.bind, /tmp/vendor/*, deny\n\
                  p, contractor, container.create, *, allow\n\
                  g, group:developer, developer\n\
                  g, group:contractor, contractor\n";
    let e = enforcer(policy);
    let dev = group("alice", "developer");
    let both = Identity::new("carl", ["developer", "contractor"]);
    let bind = |path: &str| Requirement::new(P::HostBind, path);

    let allowed = e.check(&dev, &bind("/tmp/x"));
    assert!(allowed.allowed);
    assert_eq!(
        allowed.rule.to_string(),
        "policy.csv:1: p, developer, host.bind, /tmp/*, allow"
    );

    let denied = e.check(&dev, &bind("/tmp/secret/key"));
    assert!(!denied.allowed);
    assert_eq!(
        denied.rule.to_string(),
        "policy.csv:2: p, developer, host.bind, /tmp/secret/*, deny"
    );

    // The developer group allows it, the contractor group denies it: denied.
    let across = e.check(&both, &bind("/tmp/vendor/x"));
    assert!(!across.allowed);
    assert_eq!(
        across.rule.to_string(),
        "policy.csv:3: p, contractor, host.bind, /tmp/vendor/*, deny"
    );
    assert!(e.check(&dev, &bind("/tmp/vendor/x")).allowed);

    // And the verdict is denied when any requirement is.
    let verdict = e.decide(
        &both,
        &[
            Requirement::flag(Action::ContainerCreate),
            bind("/tmp/vendor/x"),
        ],
    );
    assert_eq!(
        decisions(&verdict),
        vec![
            ("container.create".into(), true),
            ("host.bind:/tmp/vendor/x".into(), false)
        ]
    );
    assert!(!verdict.allowed);
    assert!(
        !e.decide(&both, &[]).allowed,
        "no requirements is not an allow"
    );
}

#[test]
fn a_user_rule_and_a_user_deny() {
    let e = enforcer(
        "p, developer, image.use, docker.io/library/*, allow\n\
         p, user:eve, image.use, docker.io/library/busybox, deny\n\
         p, user:frank, host.bind, /srv/frank/*, allow\n\
         g, group:developer, developer\n",
    );
    let busybox = Requirement::new(P::ImageUse, "docker.io/library/busybox");
    assert!(e.check(&group("dan", "developer"), &busybox).allowed);
    assert!(!e.check(&group("eve", "developer"), &busybox).allowed);
    assert!(
        e.check(
            &group("frank", "developer"),
            &Requirement::new(P::HostBind, "/srv/frank/data")
        )
        .allowed
    );
    assert!(
        !e.check(
            &group("dan", "developer"),
            &Requirement::new(P::HostBind, "/srv/frank/data")
        )
        .allowed
    );
}

#[test]
fn reload_swaps_the_policy_and_its_cache() {
    let e = enforcer("p, developer, host.network, *, allow\ng, group:developer, developer\n");
    let alice = group("alice", "developer");
    let net = Requirement::flag(P::HostNetwork);
    assert!(e.check(&alice, &net).allowed);
    assert!(e.check(&alice, &net).allowed, "now from the cache");
    assert_eq!(e.current.load().cache.len(), 1);

    e.reload(
        Policy::from_text(
            DEFAULT_MODEL,
            "p, developer, container.create, *, allow\ng, group:developer, developer\n",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        e.current.load().cache.len(),
        0,
        "a new policy starts with no decisions"
    );
    let after = e.check(&alice, &net);
    assert!(!after.allowed);
    assert_eq!(after.rule, Rule::DefaultDeny);
    assert!(e.policy().text().contains("container.create"));
}

#[test]
fn a_bad_policy_is_refused_and_the_last_good_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let e = default_enforcer();
    std::fs::write(dir.path().join("model.conf"), DEFAULT_MODEL).unwrap();
    std::fs::write(
        dir.path().join("policy.csv"),
        "g, group:developer, developer\np, developer, container.create, *, allow\np, developer, host.bind, /home//x, allow\n",
    )
    .unwrap();
    let err = crate::validate(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("policy.csv line 3: object \"/home//x\" can never match host.bind"),
        "{err}"
    );
    // The gateway reloads only what validates, so nothing changed.
    assert_eq!(*e.policy(), Policy::builtin());
}

#[test]
fn models_moat_cannot_read_are_refused() {
    let with = |from: &str, to: &str| {
        assert!(DEFAULT_MODEL.contains(from), "{from}");
        let model = DEFAULT_MODEL.replace(from, to);
        match Policy::from_text(&model, "p, admin, *, *, allow\n") {
            Err(PolicyError::Model { reason }) => reason,
            other => panic!("{to}: {other:?}"),
        }
    };
    assert!(with("r = sub, perm, obj", "r = sub, obj, perm").contains("request_definition"));
    assert!(with("p = sub, perm, obj, eft", "p = sub, perm, obj").contains("policy_definition"));
    assert!(with("g = _, _", "g = _, _, _").contains("role_definition"));
    assert!(
        with("!some(where (p.eft == deny))", "true").contains("policy_effect"),
        "only deny-wins"
    );
    assert!(with("e = some", "e = priority(p.eft) || deny #").contains("policy_effect"));
    assert!(with("moatMatch(r.obj, p.obj)", "ipMatch(r.obj, p.obj)").contains("calls ipMatch()"));
    assert!(with("[matchers]", "[matcher]").contains("matchers"));
    assert!(
        !with(
            "&& moatMatch(r.obj, p.obj)",
            "&& moatMatch(r.obj, p.obj) &&"
        )
        .is_empty(),
        "syntax"
    );
    assert!(
        with(
            "[role_definition]\ng = _, _",
            "[role_definition]\ng = _, _\ng2 = _, _"
        )
        .contains("only g")
    );
}

#[test]
fn a_matcher_that_panics_denies_instead() {
    // casbin's keyMatch slices by byte and panics on a multi-byte char.
    let model = DEFAULT_MODEL.replace("moatMatch(r.obj, p.obj)", "keyMatch(r.obj, p.obj)");
    let e = Enforcer::new(
        Policy::from_text(
            &model,
            "p, developer, host.bind, /ab*, allow\ng, group:dev, developer\n",
        )
        .unwrap(),
    )
    .unwrap();
    let dev = group("alice", "dev");
    assert!(
        e.check(&dev, &Requirement::new(P::HostBind, "/abc"))
            .allowed
    );
    let decision = e.check(&dev, &Requirement::new(P::HostBind, "/aé"));
    assert!(!decision.allowed);
    assert!(matches!(decision.rule, Rule::Failed(_)), "{decision}");
    // A failure is not cached, and the enforcer still works.
    assert!(
        e.check(&dev, &Requirement::new(P::HostBind, "/abd"))
            .allowed
    );
}

#[test]
fn patterns_are_exact_or_prefix() {
    assert!(pattern_matches("anything", "*"));
    assert!(pattern_matches(
        "/tmp/moat-shared/a/b",
        "/tmp/moat-shared/*"
    ));
    assert!(!pattern_matches("/tmp/moat-shared", "/tmp/moat-shared/*"));
    assert!(pattern_matches("container.create", "container.*"));
    assert!(pattern_matches("abc", "abc"));
    assert!(!pattern_matches("abcd", "abc"));
    // Bytes, not chars: no boundary to land inside.
    assert!(!pattern_matches("é", "a*"));
    assert!(!pattern_matches("/aé", "/ab*"));
    assert!(pattern_matches("/é/x", "/é*"));
}

#[test]
fn shared_across_threads_while_reloading() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Enforcer>();

    let e = std::sync::Arc::new(default_enforcer());
    let alice = group("alice", "developer");
    let create = request(
        "POST",
        "/containers/create",
        Some(r#"{"Image":"busybox:test","HostConfig":{"Binds":["data:/data"]}}"#),
    );
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    assert!(e.decide(&alice, &create).allowed);
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..5 {
                e.reload(Policy::builtin()).unwrap();
            }
        });
    });
}
