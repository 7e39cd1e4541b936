//! Bodies as the docker CLI 28 sends them (negotiated down to API 1.41),
//! written out from Docker's API shapes.

use super::*;
use crate::permission::Permission as P;

fn derived(method: &str, target: &str, body: Option<&str>) -> Vec<String> {
    let (_, requirements) = derive_request(method, target, body.map(str::as_bytes))
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    requirements.iter().map(ToString::to_string).collect()
}

fn refused(method: &str, target: &str, body: Option<&str>) -> String {
    match derive_request(method, target, body.map(str::as_bytes)) {
        Ok((_, requirements)) => panic!("{method} {target} derived {requirements:?}"),
        Err(e) => e.to_string(),
    }
}

/// `docker run` with the flags, as `docker container create` sends it.
fn create_body(image: &str, host_config: &str) -> String {
    format!(
        r#"{{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,
        "AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":[],
        "Cmd":null,"Image":"{image}","Volumes":null,"WorkingDir":"","Entrypoint":null,
        "OnBuild":null,"Labels":{{}},"HostConfig":{{"ContainerIDFile":"",
        "LogConfig":{{"Type":"","Config":{{}}}},"RestartPolicy":{{"Name":"no","MaximumRetryCount":0}},
        "AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[50,200],
        "CapDrop":null,"Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,
        "Cgroup":"","Links":null,"OomScoreAdj":0,"PublishAllPorts":false,"ReadonlyRootfs":false,
        "ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"BlkioWeight":0,
        "BlkioWeightDevice":[],"CpuPeriod":0,"CpuQuota":0,"CpusetCpus":"","CpusetMems":"",
        "DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,
        "MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],
        "MaskedPaths":null,"ReadonlyPaths":null{host_config}}},
        "NetworkingConfig":{{"EndpointsConfig":{{}}}}}}"#
    )
}

/// `docker run --privileged -v /:/host --net host --pid host --cap-add
/// SYS_ADMIN --userns host --security-opt seccomp=unconfined --device
/// /dev/kmsg -p 80:80 alpine`
pub(crate) fn everything_body() -> String {
    create_body(
        "alpine",
        r#","Binds":["/:/host"],"NetworkMode":"host","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"80"}]},
        "CapAdd":["SYS_ADMIN"],"CgroupnsMode":"","IpcMode":"","PidMode":"host","Privileged":true,
        "SecurityOpt":["seccomp=unconfined"],"UTSMode":"","UsernsMode":"host","CgroupParent":"",
        "Devices":[{"PathOnHost":"/dev/kmsg","PathInContainer":"/dev/kmsg","CgroupPermissions":"rwm"}]"#,
    )
}

/// `docker run --rm -v data:/data -v /tmp/moat-shared/x:/x busybox:test`
pub(crate) fn developer_body() -> String {
    create_body(
        "busybox:test",
        r#","Binds":["data:/data","/tmp/moat-shared/x:/x"],"NetworkMode":"bridge","PortBindings":{},
        "CapAdd":null,"CgroupnsMode":"","IpcMode":"","PidMode":"","Privileged":false,"SecurityOpt":null,
        "UTSMode":"","UsernsMode":"","CgroupParent":"","Devices":[]"#,
    )
}

#[test]
fn docker_run_with_every_privilege() {
    assert_eq!(
        derived("POST", "/v1.41/containers/create", Some(&everything_body())),
        vec![
            "container.create",
            "image.use:docker.io/library/alpine",
            "container.privileged",
            "container.cap_add:SYS_ADMIN",
            "host.network",
            "host.pid",
            "host.userns",
            "security.seccomp_unconfined",
            "host.device:/dev/kmsg",
            "host.bind:/",
            "host.port_privileged:80",
        ]
    );
}

#[test]
fn a_plain_run_needs_the_action_and_the_image() {
    assert_eq!(
        derived(
            "POST",
            "/v1.41/containers/create?name=web",
            Some(&create_body("busybox:test", ""))
        ),
        vec![
            "container.create:web",
            "image.use:docker.io/library/busybox"
        ]
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&developer_body())),
        vec![
            "container.create",
            "image.use:docker.io/library/busybox",
            "volume.use:data",
            "host.bind:/tmp/moat-shared/x",
        ]
    );
}

#[test]
fn binds_are_normalized_lexically() {
    let body = create_body(
        "alpine",
        r#","Binds":["/tmp/moat-shared/../../etc:/x:ro","//srv///data/:/y","/home/./a/:/z:rw"]"#,
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&body)),
        vec![
            "container.create",
            "image.use:docker.io/library/alpine",
            "host.bind:/etc",
            "host.bind:/srv/data",
            "host.bind:/home/a",
        ]
    );
    for binds in [r#"["/a"]"#, r#"["/a:/b:ro:x"]"#, r#"[":/b"]"#] {
        let body = create_body("alpine", &format!(r#","Binds":{binds}"#));
        let err = refused("POST", "/containers/create", Some(&body));
        assert!(err.starts_with("HostConfig.Binds: "), "{binds}: {err}");
    }
}

#[test]
fn mounts_by_type() {
    let body = create_body(
        "alpine",
        r#","Mounts":[{"Type":"bind","Source":"/var/run/../run/docker.sock","Target":"/s"},
        {"Type":"volume","Source":"cache","Target":"/c"},{"Type":"volume","Source":"","Target":"/anon"},
        {"Type":"tmpfs","Target":"/t"},
        {"Type":"volume","Source":"sneaky","Target":"/v","VolumeOptions":{"DriverConfig":
          {"Name":"local","Options":{"type":"none","o":"bind","device":"/etc"}}}}]"#,
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&body)),
        vec![
            "container.create",
            "image.use:docker.io/library/alpine",
            "host.bind:/var/run/docker.sock",
            "volume.use:cache",
            "volume.use:sneaky",
            "volume.driver:local",
            "host.bind:/etc",
        ]
    );
    let body = create_body(
        "alpine",
        r#","Mounts":[{"Type":"npipe","Source":"x","Target":"/x"}]"#,
    );
    assert!(refused("POST", "/containers/create", Some(&body)).contains("mount type \"npipe\""));
    let body = create_body(
        "alpine",
        r#","Mounts":[{"Type":"bind","Source":"rel","Target":"/x"}]"#,
    );
    assert!(refused("POST", "/containers/create", Some(&body)).contains("not an absolute path"));
}

#[test]
fn host_ports_below_1024() {
    let body = create_body(
        "alpine",
        r#","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"80"},{"HostIp":"::","HostPort":"8080"}],
        "53/udp":[{"HostIp":"127.0.0.1","HostPort":"1020-1030"}],"9000/tcp":[{"HostIp":"","HostPort":""}],
        "22/tcp":null}"#,
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&body))[2..],
        [
            "host.port_privileged:80",
            "host.port_privileged:1020",
            "host.port_privileged:1021",
            "host.port_privileged:1022",
            "host.port_privileged:1023",
        ]
    );
    for port in ["http", "70000", "90-80", "-1"] {
        let body = create_body(
            "alpine",
            &format!(r#","PortBindings":{{"80/tcp":[{{"HostPort":"{port}"}}]}}"#),
        );
        assert!(
            refused("POST", "/containers/create", Some(&body))
                .starts_with("HostConfig.PortBindings"),
            "{port}"
        );
    }
}

#[test]
fn namespaces_and_security_options() {
    let body = create_body(
        "alpine",
        r#","IpcMode":"host","UTSMode":"host","CgroupnsMode":"host","CapAdd":["net_admin","CAP_SYS_PTRACE","all"],
        "SecurityOpt":["no-new-privileges","seccomp:{\"defaultAction\":\"SCMP_ACT_ALLOW\"}","apparmor=unconfined",
        "label=disable","systempaths=unconfined"],"CgroupParent":"/system.slice""#,
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&body))[2..],
        [
            "container.cap_add:NET_ADMIN",
            "container.cap_add:SYS_PTRACE",
            "container.cap_add:ALL",
            "host.ipc",
            "host.uts",
            "host.cgroupns",
            "security.seccomp_profile",
            "security.apparmor_unconfined",
            "security.systempaths_unconfined",
            "container.cgroup_parent:/system.slice",
        ]
    );
    for (host_config, field) in [
        (
            r#","NetworkMode":"container:web""#,
            "HostConfig.NetworkMode",
        ),
        (r#","PidMode":"container:web""#, "HostConfig.PidMode"),
        (r#","UsernsMode":"other""#, "HostConfig.UsernsMode"),
        (
            r#","SecurityOpt":["seccomp=/etc/profile.json"]"#,
            "HostConfig.SecurityOpt",
        ),
        (r#","SecurityOpt":["unknown=1"]"#, "HostConfig.SecurityOpt"),
        (r#","CapAdd":["SYS ADMIN"]"#, "HostConfig.CapAdd"),
    ] {
        let body = create_body("alpine", host_config);
        let err = refused("POST", "/containers/create", Some(&body));
        assert!(err.starts_with(field), "{host_config}: {err}");
    }
}

#[test]
fn bodies_that_cannot_be_judged() {
    assert_eq!(
        refused("POST", "/containers/create", None),
        "container.create needs a JSON body"
    );
    assert!(
        refused("POST", "/containers/create", Some("{"))
            .starts_with("invalid JSON body for container.create")
    );
    let twice = r#"{"Image":"alpine","HostConfig":{"Privileged":false,"Privileged":true}}"#;
    assert!(refused("POST", "/containers/create", Some(twice)).contains("duplicate field"));
    let wrong = r#"{"Image":"alpine","HostConfig":{"Privileged":"yes"}}"#;
    assert!(refused("POST", "/containers/create", Some(wrong)).contains("invalid type"));
    assert!(
        refused("POST", "/containers/create", Some(r#"{"Image":""}"#))
            .starts_with("Image: no image")
    );
    assert!(
        refused("POST", "/containers/create", Some(r#"{"Image":"Alpine"}"#)).contains("lowercase")
    );
    assert_eq!(
        refused("POST", "/containers/web/start", Some("{}")),
        "container.start takes no body"
    );
    assert!(
        refused("POST", "/swarm/init", Some("not json"))
            .starts_with("invalid JSON body for swarm.init")
    );
    assert_eq!(
        refused(
            "POST",
            "/containers/create?name=a&name=b",
            Some(&developer_body())
        ),
        "query parameter name: given more than once"
    );
}

#[test]
fn image_ids_and_id_prefixes() {
    let id = "0123456789abcdef".repeat(4);
    assert_eq!(
        derived(
            "POST",
            "/containers/create",
            Some(&create_body(&format!("sha256:{id}"), ""))
        )[1],
        format!("image.use:sha256:{id}")
    );
    assert_eq!(
        derived("POST", "/containers/create", Some(&create_body("cafe", "")))[1..],
        ["image.use:docker.io/library/cafe", "image.use:sha256:cafe"]
    );
}

#[test]
fn exec_as_root_or_privileged() {
    let exec = |user: &str, privileged: bool| {
        format!(
            r#"{{"User":"{user}","Privileged":{privileged},"Tty":true,"AttachStdin":true,"AttachStderr":true,
            "AttachStdout":true,"Detach":false,"DetachKeys":"","Env":null,"WorkingDir":"","Cmd":["sh"]}}"#
        )
    };
    let target = "/v1.41/containers/web/exec";
    assert_eq!(
        derived("POST", target, Some(&exec("", false))),
        vec!["exec.create:web", "exec.root:web"]
    );
    for user in ["root", "0", "00", "root:root", "0:1000"] {
        assert!(
            derived("POST", target, Some(&exec(user, false))).contains(&"exec.root:web".to_owned()),
            "{user}"
        );
    }
    assert_eq!(
        derived("POST", target, Some(&exec("1000:1000", false))),
        vec!["exec.create:web"]
    );
    assert_eq!(
        derived("POST", target, Some(&exec("nobody", true))),
        vec!["exec.create:web", "exec.privileged:web"]
    );
    assert_eq!(
        derived(
            "POST",
            "/exec/abc/start",
            Some(r#"{"Detach":false,"Tty":true}"#)
        ),
        vec!["exec.start:abc"]
    );
    assert!(
        refused("POST", "/exec/abc/start", Some(r#"{"Detach":"no"}"#)).contains("invalid type")
    );
}

#[test]
fn pulls_imports_pushes_and_tags() {
    assert_eq!(
        derived(
            "POST",
            "/v1.41/images/create?fromImage=alpine&tag=3.20",
            None
        ),
        vec![
            "image.create:docker.io/library/alpine",
            "image.pull:docker.io/library/alpine"
        ]
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        derived(
            "POST",
            &format!("/images/create?fromImage=quay.io%2Fteam%2Fapp&tag={digest}"),
            None
        ),
        vec![
            "image.create:quay.io/team/app",
            "image.pull:quay.io/team/app"
        ]
    );
    assert!(
        refused("POST", "/images/create?fromImage=alpine&tag=1/x", None)
            .starts_with("query parameter tag")
    );
    assert!(refused("POST", "/images/create?fromImage=a&fromSrc=-", None).contains("not both"));
    assert!(refused("POST", "/images/create", None).contains("give fromImage or fromSrc"));
    assert_eq!(
        derived("POST", "/images/create?fromSrc=-&repo=mine&tag=1", None),
        vec![
            "image.create",
            "image.import:-",
            "image.name:docker.io/library/mine"
        ]
    );
    assert_eq!(
        derived(
            "POST",
            "/images/create?fromSrc=http%3A%2F%2F169.254.169.254%2F",
            None
        ),
        vec!["image.create", "image.import:http://169.254.169.254/"]
    );
    assert_eq!(
        derived(
            "POST",
            "/images/registry.example.com:5000/team/app:1/push?tag=1",
            None
        ),
        vec!["image.push:registry.example.com:5000/team/app"]
    );
    assert_eq!(
        derived("POST", "/images/3f2a/tag?repo=alpine&tag=latest", None),
        vec!["image.tag:3f2a", "image.name:docker.io/library/alpine"]
    );
    // What the engine would name it when the tag smuggles a `/`.
    assert_eq!(
        derived("POST", "/images/3f2a/tag?repo=app&tag=1/x", None),
        vec!["image.tag:3f2a", "image.name:app:1/x"]
    );
    assert!(refused("POST", "/images/3f2a/tag", None).contains("no repository"));
    assert_eq!(
        derived(
            "POST",
            "/commit?container=web&repo=quay.io/me/snap&tag=1",
            Some("{}")
        ),
        vec!["container.commit:web", "image.name:quay.io/me/snap"]
    );
    assert_eq!(
        derived("GET", "/images/get?names=alpine&names=busybox", None),
        vec!["image.save:alpine", "image.save:busybox"]
    );
}

#[test]
fn builds() {
    assert_eq!(
        derived(
            "POST",
            "/v1.41/build?t=app:1&t=quay.io/x/y&remote=https://github.com/x/y.git&networkmode=host&cgroupparent=/x&q=1",
            None
        ),
        vec![
            "build",
            "image.pull",
            "image.use",
            "image.name:docker.io/library/app",
            "image.name:quay.io/x/y",
            "build.remote:https://github.com/x/y.git",
            "host.network",
            "container.cgroup_parent:/x",
        ]
    );
    assert_eq!(
        derived("POST", "/build?remote=client-session&version=2", None),
        vec!["build", "image.pull", "image.use"]
    );
    assert!(
        refused("POST", "/build?networkmode=container:x", None)
            .starts_with("query parameter networkmode")
    );
    assert!(refused("POST", "/build?t=UPPER", None).starts_with("query parameter t"));
}

#[test]
fn the_action_on_what_the_path_names() {
    assert_eq!(
        derived("GET", "/v1.41/containers/web/logs?follow=1", None),
        vec!["container.logs:web"]
    );
    assert_eq!(
        derived("GET", "/containers/json?all=1", None),
        vec!["container.list"]
    );
    assert_eq!(derived("GET", "/_ping", None), vec!["system.ping"]);
    assert_eq!(
        derived("DELETE", "/images/alpine:3", None),
        vec!["image.remove:alpine:3"]
    );
    assert_eq!(derived("GET", "/moat/v1/whoami", None), vec!["moat.whoami"]);
}

#[test]
fn updates_volumes_networks_and_logins() {
    assert_eq!(
        derived(
            "POST",
            "/containers/web/update",
            Some(
                r#"{"CpuShares":512,"Memory":0,"CgroupParent":"","Devices":[{"PathOnHost":"/dev//sda"}],
            "DeviceCgroupRules":null,"DeviceRequests":null,"RestartPolicy":{"Name":"always"}}"#
            )
        ),
        vec!["container.update:web", "host.device:/dev/sda"]
    );
    assert!(
        refused(
            "POST",
            "/containers/web/update",
            Some(r#"{"DeviceCgroupRules":["c *:* rwm"]}"#)
        )
        .starts_with("DeviceCgroupRules")
    );
    assert_eq!(
        derived(
            "POST",
            "/volumes/create",
            Some(r#"{"Name":"data","Driver":"local","DriverOpts":{},"Labels":null}"#)
        ),
        vec!["volume.create:data"]
    );
    assert_eq!(
        derived("POST", "/volumes/create", None),
        vec!["volume.create"]
    );
    assert_eq!(
        derived(
            "POST",
            "/volumes/create",
            Some(r#"{"Name":"disk","DriverOpts":{"type":"ext4","device":"/dev/sdb1"}}"#)
        ),
        vec![
            "volume.create:disk",
            "volume.driver:local",
            "host.device:/dev/sdb1"
        ]
    );
    assert_eq!(
        derived(
            "POST",
            "/networks/create",
            Some(
                r#"{"Name":"lan","CheckDuplicate":true,"Driver":"macvlan","Options":{"parent":"eth0"},"IPAM":{}}"#
            )
        ),
        vec!["network.create:lan", "network.driver:macvlan"]
    );
    assert_eq!(
        derived(
            "POST",
            "/networks/create",
            Some(r#"{"Name":"n","Driver":"bridge","Options":{}}"#)
        ),
        vec!["network.create:n"]
    );
    assert_eq!(
        derived(
            "POST",
            "/networks/n/connect",
            Some(r#"{"Container":"web","EndpointConfig":null}"#)
        ),
        vec!["network.connect:n"]
    );
    assert!(refused("POST", "/networks/n/connect", Some("{}")).starts_with("Container"));
    assert_eq!(
        derived(
            "POST",
            "/auth",
            Some(r#"{"username":"u","password":"p","serveraddress":"quay.io"}"#)
        ),
        vec!["auth:quay.io"]
    );
    assert_eq!(
        derived("POST", "/auth", Some(r#"{"username":"u","password":"p"}"#)),
        vec!["auth:https://index.docker.io/v1/"]
    );
}

#[test]
fn the_same_privilege_twice_is_one_requirement() {
    let body = create_body(
        "alpine",
        r#","Binds":["/srv:/a","/srv/:/b"],"CapAdd":["NET_ADMIN","net_admin"]"#,
    );
    let requirements = derived("POST", "/containers/create", Some(&body));
    assert_eq!(
        requirements
            .iter()
            .filter(|r| *r == "host.bind:/srv")
            .count(),
        1
    );
    assert_eq!(
        requirements
            .iter()
            .filter(|r| r.starts_with("container.cap_add"))
            .count(),
        1
    );
    let typed = derive_request("POST", "/containers/create", Some(body.as_bytes()))
        .unwrap()
        .1;
    assert_eq!(typed[0].permission, P::Action(Action::ContainerCreate));
}
