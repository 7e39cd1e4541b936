//! Each docker flag that changes what a call needs, checked through
//! `moat_policy::derive_request`: the requirement the gateway would derive
//! from the request the parser built.

use super::*;

fn argv(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// Every requirement of every request `line` sends, as `perm:object`.
fn needs(line: &str) -> Vec<String> {
    requests(&argv(line))
        .unwrap_or_else(|e| panic!("{line}: {e:#}"))
        .iter()
        .flat_map(|r| {
            let body = r.body_bytes();
            let (_, requirements) =
                moat_policy::derive_request(r.method, &r.target, body.as_deref())
                    .unwrap_or_else(|e| panic!("{line}: {} {}: {e}", r.method, r.target));
            requirements
        })
        .map(|r| r.to_string())
        .collect()
}

/// The requirements beyond what `docker run -d busybox` needs.
fn extra(flags: &str) -> Vec<String> {
    let base = needs("docker run -d busybox");
    needs(&format!("docker run -d {flags} busybox"))
        .into_iter()
        .filter(|r| !base.contains(r))
        .collect()
}

fn error(line: &str) -> String {
    match requests(&argv(line)) {
        Ok(r) => panic!("{line}: expected an error, got {r:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn run_creates_attaches_waits_and_starts() {
    assert_eq!(
        needs("docker run busybox echo hi"),
        [
            "container.create",
            "image.use:docker.io/library/busybox",
            "container.attach:(id)",
            "container.wait:(id)",
            "container.start:(id)",
        ]
    );
    assert_eq!(
        needs("docker run -d --name web busybox"),
        [
            "container.create:web",
            "image.use:docker.io/library/busybox",
            "container.start:web"
        ]
    );
    assert_eq!(
        needs("create quay.io/team/app:1.2"),
        ["container.create", "image.use:quay.io/team/app"]
    );
    assert_eq!(
        needs("docker run --pull always -d alpine:3")[..2],
        [
            "image.create:docker.io/library/alpine",
            "image.pull:docker.io/library/alpine"
        ]
    );
}

#[test]
fn each_privilege_flag_becomes_its_requirement() {
    for (flags, want) in [
        ("--privileged", vec!["container.privileged"]),
        ("--privileged=true", vec!["container.privileged"]),
        ("--privileged=false", vec![]),
        ("-v /:/x", vec!["host.bind:/"]),
        ("-v/srv/data:/data:ro", vec!["host.bind:/srv/data"]),
        ("--volume /tmp/../etc:/x", vec!["host.bind:/etc"]),
        ("-v data:/data", vec!["volume.use:data"]),
        ("-v /data", vec![]),
        (
            "--mount type=bind,source=/srv,target=/x,readonly",
            vec!["host.bind:/srv"],
        ),
        (
            "--mount type=volume,src=cache,dst=/c",
            vec!["volume.use:cache"],
        ),
        ("--mount target=/anon", vec![]),
        ("--mount type=tmpfs,target=/t", vec![]),
        (
            "--mount type=volume,src=v,target=/x,volume-driver=nfs",
            vec!["volume.use:v", "volume.driver:nfs"],
        ),
        (
            "--mount type=volume,target=/x,volume-opt=device=/dev/sdb1",
            vec!["volume.driver:local", "host.device:/dev/sdb1"],
        ),
        ("--cap-add net_admin", vec!["container.cap_add:NET_ADMIN"]),
        (
            "--cap-add CAP_SYS_ADMIN --cap-add=all",
            vec!["container.cap_add:SYS_ADMIN", "container.cap_add:ALL"],
        ),
        ("--cap-drop ALL", vec![]),
        ("--device /dev/fuse", vec!["host.device:/dev/fuse"]),
        (
            "--device /dev/sda:/dev/xvda:r",
            vec!["host.device:/dev/sda"],
        ),
        ("--net host", vec!["host.network"]),
        ("--network=host", vec!["host.network"]),
        ("--network none", vec![]),
        ("--pid host", vec!["host.pid"]),
        ("--ipc host", vec!["host.ipc"]),
        ("--uts host", vec!["host.uts"]),
        ("--userns host", vec!["host.userns"]),
        ("--cgroupns host", vec!["host.cgroupns"]),
        ("--cgroupns private", vec![]),
        (
            "--security-opt seccomp=unconfined",
            vec!["security.seccomp_unconfined"],
        ),
        (
            "--security-opt apparmor=unconfined",
            vec!["security.apparmor_unconfined"],
        ),
        (
            "--security-opt systempaths=unconfined",
            vec!["security.systempaths_unconfined"],
        ),
        ("--security-opt no-new-privileges", vec![]),
        ("-p 80:80", vec!["host.port_privileged:80"]),
        ("-p 8080:80", vec![]),
        ("-p 80", vec![]),
        (
            "-p 127.0.0.1:443:8443/tcp",
            vec!["host.port_privileged:443"],
        ),
        ("-p [::1]:53:53/udp", vec!["host.port_privileged:53"]),
        (
            "--publish 1022-1025:2022-2025",
            vec!["host.port_privileged:1022", "host.port_privileged:1023"],
        ),
        (
            "--cgroup-parent team.slice",
            vec!["container.cgroup_parent:team.slice"],
        ),
        // Nothing policy judges:
        (
            "-u root -e A=B --env=C=D -w /tmp -h box --rm -m 64m --restart always",
            vec![],
        ),
        (
            "-l a=b --label c --tmpfs /run:size=64m --add-host x:1.2.3.4 --init",
            vec![],
        ),
        (
            "--read-only --entrypoint sh --stop-timeout 5 --pids-limit 10",
            vec![],
        ),
    ] {
        assert_eq!(extra(flags), want, "docker run -d {flags} busybox");
    }
}

#[test]
fn a_seccomp_profile_file_is_sent_as_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.json");
    std::fs::write(&file, r#"{ "defaultAction": "SCMP_ACT_ALLOW" }"#).unwrap();
    let flags = format!("--security-opt seccomp={}", file.display());
    assert_eq!(extra(&flags), ["security.seccomp_profile"]);
    let body = requests(&argv(&format!("run {flags} busybox")))
        .unwrap()
        .remove(0)
        .body
        .unwrap();
    assert_eq!(
        body["HostConfig"]["SecurityOpt"][0],
        r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#
    );
}

#[test]
fn short_flags_combine_and_the_command_is_not_read_as_flags() {
    assert_eq!(
        needs("run -dit busybox sh"),
        [
            "container.create",
            "image.use:docker.io/library/busybox",
            "container.start:(id)"
        ]
    );
    // Everything after the image belongs to the command.
    assert_eq!(
        extra("busybox ls --privileged -v /:/x"),
        Vec::<String>::new()
    );
    let requests = requests(&argv("run -it --rm -eA=1 --name=web busybox sh -c exit")).unwrap();
    let body = requests[0].body.as_ref().unwrap();
    assert_eq!(requests[0].target, "/v1.41/containers/create?name=web");
    assert_eq!(body["Cmd"], json!(["sh", "-c", "exit"]));
    assert_eq!(body["Env"], json!(["A=1"]));
    assert_eq!(body["Tty"], true);
    assert_eq!(body["OpenStdin"], true);
    assert_eq!(body["HostConfig"]["AutoRemove"], true);
    assert_eq!(body["HostConfig"]["NetworkMode"], "default");
    assert_eq!(
        requests[1].target,
        "/v1.41/containers/web/attach?stderr=1&stdin=1&stdout=1&stream=1"
    );
    assert_eq!(
        requests[2].target,
        "/v1.41/containers/web/wait?condition=removed"
    );
}

#[test]
fn global_options_and_management_commands() {
    assert_eq!(
        needs("docker -H tcp://moat:2376 --tlsverify --context=x run -d --privileged busybox"),
        needs("run -d --privileged busybox")
    );
    assert_eq!(
        needs("docker container run -d busybox"),
        needs("docker run -d busybox")
    );
    assert_eq!(needs("docker container ls -a"), ["container.list"]);
    assert_eq!(needs("image ls"), ["image.list"]);
    assert_eq!(needs("image pull alpine"), needs("pull alpine"));
    assert_eq!(needs("image rm alpine"), ["image.remove:alpine"]);
    assert_eq!(needs("container inspect web"), ["container.inspect:web"]);
    assert_eq!(needs("image inspect alpine"), ["image.inspect:alpine"]);
}

#[test]
fn exec_needs_root_and_privileged_as_asked() {
    assert_eq!(
        needs("docker exec web sh"),
        [
            "exec.create:web",
            "exec.root:web",
            "exec.start:(exec-id)",
            "exec.inspect:(exec-id)"
        ]
    );
    assert_eq!(
        needs("docker exec -u 1000 -d web sleep 1"),
        ["exec.create:web", "exec.start:(exec-id)"]
    );
    assert_eq!(
        needs("exec --privileged -u root:root -it web sh")[..3],
        ["exec.create:web", "exec.root:web", "exec.privileged:web"]
    );
    let requests = requests(&argv("exec -e A=1 -w /tmp -u app web id -u")).unwrap();
    let body = requests[0].body.as_ref().unwrap();
    assert_eq!(body["Cmd"], json!(["id", "-u"]));
    assert_eq!(body["User"], "app");
    assert_eq!(body["WorkingDir"], "/tmp");
}

#[test]
fn container_and_image_commands() {
    assert_eq!(needs("ps"), ["container.list"]);
    assert_eq!(needs("ps -a"), ["container.list"]);
    assert_eq!(
        needs("logs -f --tail 10 web"),
        ["container.inspect:web", "container.logs:web"]
    );
    assert_eq!(
        needs("rm -fv web db"),
        ["container.remove:web", "container.remove:db"]
    );
    assert_eq!(needs("stop -t 3 web"), ["container.stop:web"]);
    assert_eq!(needs("restart web"), ["container.restart:web"]);
    assert_eq!(needs("start web"), ["container.start:web"]);
    assert_eq!(
        needs("start -ai web"),
        ["container.attach:web", "container.start:web"]
    );
    assert_eq!(needs("kill -s HUP web"), ["container.kill:web"]);
    assert_eq!(needs("inspect web"), ["container.inspect:web"]);
    assert_eq!(
        needs("inspect --type image alpine"),
        ["image.inspect:alpine"]
    );
    assert_eq!(needs("inspect --type volume data"), ["volume.inspect:data"]);
    assert_eq!(needs("images -a"), ["image.list"]);
    assert_eq!(
        needs(
            "pull quay.io/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ),
        [
            "image.create:quay.io/team/app",
            "image.pull:quay.io/team/app"
        ]
    );
    assert_eq!(
        needs("pull localhost:5000/app"),
        [
            "image.create:localhost:5000/app",
            "image.pull:localhost:5000/app"
        ]
    );
    assert_eq!(
        needs("push quay.io/team/app:1"),
        ["image.push:quay.io/team/app"]
    );
    assert_eq!(
        needs("tag busybox quay.io/team/box:2"),
        ["image.tag:busybox", "image.name:quay.io/team/box"]
    );
    assert_eq!(needs("rmi -f busybox"), ["image.remove:busybox"]);
    assert_eq!(
        needs("build -t quay.io/team/app:1 -t app -f Dockerfile.dev ."),
        [
            "build",
            "image.pull",
            "image.use",
            "image.name:quay.io/team/app",
            "image.name:docker.io/library/app"
        ]
    );
    assert_eq!(
        needs("build --network host --cgroup-parent x .")[3..],
        ["host.network", "container.cgroup_parent:x"]
    );
}

#[test]
fn what_cannot_be_read_is_an_error() {
    assert!(error("run --bogus busybox").contains("unknown flag --bogus"));
    assert!(error("run -Z busybox").contains("unknown flag -Z"));
    assert!(error("run --name").contains("--name needs a value"));
    assert!(error("run -d").contains("needs an IMAGE"));
    assert!(error("exec web").contains("COMMAND"));
    assert!(error("frobnicate").contains("does not know `docker frobnicate`"));
    assert!(error("run -p 80:x busybox").contains("not a port"));
    assert!(error("run --mount type=bind,target=/x busybox").contains("needs a source"));
    assert!(error("run --mount colour=red,target=/x busybox").contains("unexpected key"));
    assert!(error("").contains("no docker command"));
}

#[test]
fn requests_the_gateway_refuses_are_built_anyway() {
    // The engine joins no other namespace: the gateway refuses these (400),
    // and `check` says so rather than guessing.
    for flags in ["--network mynet", "--pid container:web"] {
        let requests = requests(&argv(&format!("run -d {flags} busybox"))).unwrap();
        let body = requests[0].body_bytes();
        let err = moat_policy::derive_request("POST", &requests[0].target, body.as_deref())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not supported"), "{flags}: {err}");
    }
}
