//! Docker command lines → the Docker API requests the docker CLI sends for
//! them, so `moat policy check alice -- docker run --privileged -v /:/x
//! busybox` judges what the gateway would see.
//!
//! Flags are read the way the docker CLI reads them (pflag: `-it`,
//! `-p8080:80`, `--name=web`, `--privileged=false`; `run`, `create` and
//! `exec` stop at the first argument that is not a flag). Bodies are built
//! with `moat_api`'s own `ContainerConfig`/`HostConfig`/`ExecConfig`, plus
//! the few fields those types leave out that policy reads (`PortBindings`,
//! a volume mount's `DriverConfig`). Flags that ask for nothing policy
//! judges (memory, DNS, logging, ...) are accepted and left out; an
//! unknown flag is an error, because guessing whether it takes a value
//! could misplace the image and everything after it.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use moat_api::container::{ContainerConfig, DeviceMapping, MountSpec};
use moat_api::exec::{ExecConfig, ExecStartConfig};
use serde_json::{Value, json};

/// The API version the requests are sent at (moat serves 1.24–1.41).
const PREFIX: &str = "/v1.41";

/// Stands for a container's id in the requests after `create`, when the
/// command line gives no name: the engine makes the id up.
pub const NEW_CONTAINER: &str = "(id)";
/// Stands for the id the engine gives an exec instance.
pub const NEW_EXEC: &str = "(exec-id)";

/// One request as the docker CLI sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    /// Path with the version prefix, and query.
    pub target: String,
    /// The JSON body, for requests judged on one.
    pub body: Option<Value>,
    /// On the container this command line creates, which is the caller's
    /// own whoever else's containers it names.
    pub created: bool,
}

impl ApiRequest {
    fn new(method: &'static str, path: String, query: &[(&str, String)]) -> ApiRequest {
        let mut target = format!("{PREFIX}{path}");
        for (i, (key, value)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(key);
            target.push('=');
            target.push_str(&encode(value, b"-._~"));
        }
        ApiRequest {
            method,
            target,
            body: None,
            created: false,
        }
    }

    fn on_created(mut self) -> ApiRequest {
        self.created = true;
        self
    }

    fn with_body(mut self, body: Value) -> ApiRequest {
        self.body = Some(body);
        self
    }

    /// The body's bytes, as sent.
    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        self.body.as_ref().map(|b| b.to_string().into_bytes())
    }
}

/// The requests `docker ARGS...` sends, in order. A leading `docker` is
/// optional; global options before the command are skipped.
pub fn requests(argv: &[String]) -> Result<Vec<ApiRequest>> {
    let mut argv = argv;
    if argv.first().is_some_and(|a| a == "docker") {
        argv = &argv[1..];
    }
    let global = parse_flags("docker", GLOBAL, argv, false)?;
    let mut rest: &[String] = &global.args;
    let Some(first) = rest.first() else {
        bail!("no docker command given (e.g. docker run busybox)");
    };
    // `docker container run`, `docker image pull`: management commands.
    let command = match (first.as_str(), rest.get(1).map(String::as_str)) {
        ("container", Some(sub)) | ("image", Some(sub)) | ("builder", Some(sub)) => {
            let name = match (first.as_str(), sub) {
                ("container", "ls" | "list") => "ps",
                ("container", "remove") => "rm",
                ("container", "inspect") => "container-inspect",
                ("image", "ls" | "list") => "images",
                ("image", "rm" | "remove") => "rmi",
                ("image", "inspect") => "image-inspect",
                (_, sub) => sub,
            };
            rest = &rest[2..];
            name.to_owned()
        }
        (command, _) => {
            rest = &rest[1..];
            command.to_owned()
        }
    };
    match command.as_str() {
        "run" => run(rest, true),
        "create" => run(rest, false),
        "exec" => exec(rest),
        "ps" => {
            let p = parse_flags("ps", PS, rest, true)?;
            no_args("ps", &p)?;
            let mut query = Vec::new();
            if p.on("all") {
                query.push(("all", "1".to_owned()));
            }
            Ok(vec![ApiRequest::new(
                "GET",
                "/containers/json".into(),
                &query,
            )])
        }
        "images" => {
            let p = parse_flags("images", IMAGES, rest, true)?;
            let mut query = Vec::new();
            if p.on("all") {
                query.push(("all", "1".to_owned()));
            }
            Ok(vec![ApiRequest::new("GET", "/images/json".into(), &query)])
        }
        "logs" => {
            let p = parse_flags("logs", LOGS, rest, true)?;
            let [container] = exactly::<1>("logs", "CONTAINER", &p.args)?;
            let path = format!("/containers/{}", segment(container));
            let mut query = vec![("stderr", "1".to_owned()), ("stdout", "1".to_owned())];
            if p.on("follow") {
                query.push(("follow", "1".into()));
            }
            query.push(("tail", p.value("tail").unwrap_or("all").to_owned()));
            Ok(vec![
                // The CLI asks whether the container has a TTY first.
                ApiRequest::new("GET", format!("{path}/json"), &[]),
                ApiRequest::new("GET", format!("{path}/logs"), &query),
            ])
        }
        "rm" => {
            let p = parse_flags("rm", RM, rest, true)?;
            let mut query = Vec::new();
            if p.on("force") {
                query.push(("force", "1".to_owned()));
            }
            if p.on("volumes") {
                query.push(("v", "1".to_owned()));
            }
            each("rm", "CONTAINER", &p.args, |c| {
                ApiRequest::new("DELETE", format!("/containers/{}", segment(c)), &query)
            })
        }
        "stop" | "restart" => {
            let p = parse_flags(&command, STOP, rest, true)?;
            let mut query = Vec::new();
            if let Some(signal) = p.value("signal") {
                query.push(("signal", signal.to_owned()));
            }
            if let Some(time) = p.value("time") {
                query.push(("t", time.to_owned()));
            }
            each(&command, "CONTAINER", &p.args, |c| {
                ApiRequest::new(
                    "POST",
                    format!("/containers/{}/{command}", segment(c)),
                    &query,
                )
            })
        }
        "start" => {
            let p = parse_flags("start", START, rest, true)?;
            let attach = p.on("attach") || p.on("interactive");
            let mut out = Vec::new();
            for c in nonempty("start", "CONTAINER", &p.args)? {
                let path = format!("/containers/{}", segment(c));
                if attach {
                    out.push(attach_request(&path, p.on("interactive")));
                }
                out.push(ApiRequest::new("POST", format!("{path}/start"), &[]));
            }
            Ok(out)
        }
        "kill" => {
            let p = parse_flags("kill", KILL, rest, true)?;
            let mut query = Vec::new();
            if let Some(signal) = p.value("signal") {
                query.push(("signal", signal.to_owned()));
            }
            each("kill", "CONTAINER", &p.args, |c| {
                ApiRequest::new("POST", format!("/containers/{}/kill", segment(c)), &query)
            })
        }
        "inspect" | "container-inspect" | "image-inspect" => {
            let p = parse_flags("inspect", INSPECT, rest, true)?;
            let kind = match command.as_str() {
                "container-inspect" => "container",
                "image-inspect" => "image",
                _ => p.value("type").unwrap_or("container"),
            };
            let mut query = Vec::new();
            if p.on("size") && kind == "container" {
                query.push(("size", "1".to_owned()));
            }
            each("inspect", "NAME", &p.args, |name| {
                let path = match kind {
                    "image" => format!("/images/{}/json", image_path(name)),
                    "volume" => format!("/volumes/{}", segment(name)),
                    "network" => format!("/networks/{}", segment(name)),
                    _ => format!("/containers/{}/json", segment(name)),
                };
                ApiRequest::new("GET", path, &query)
            })
        }
        "pull" => {
            let p = parse_flags("pull", PULL, rest, true)?;
            let [image] = exactly::<1>("pull", "IMAGE", &p.args)?;
            let (name, tag) = split_reference(image)?;
            let mut query = vec![("fromImage", name)];
            if !p.on("all-tags") {
                query.push(("tag", tag.unwrap_or_else(|| "latest".into())));
            }
            Ok(vec![ApiRequest::new(
                "POST",
                "/images/create".into(),
                &query,
            )])
        }
        "push" => {
            let p = parse_flags("push", PUSH, rest, true)?;
            let [image] = exactly::<1>("push", "IMAGE", &p.args)?;
            let (name, tag) = split_reference(image)?;
            let mut query = Vec::new();
            if !p.on("all-tags") {
                query.push(("tag", tag.unwrap_or_else(|| "latest".into())));
            }
            Ok(vec![ApiRequest::new(
                "POST",
                format!("/images/{}/push", image_path(&name)),
                &query,
            )])
        }
        "tag" => {
            let p = parse_flags("tag", &[], rest, true)?;
            let [source, target] = exactly::<2>("tag", "SOURCE TARGET", &p.args)?;
            let (repo, tag) = split_reference(target)?;
            let query = [
                ("repo", repo),
                ("tag", tag.unwrap_or_else(|| "latest".into())),
            ];
            Ok(vec![ApiRequest::new(
                "POST",
                format!("/images/{}/tag", image_path(source)),
                &query,
            )])
        }
        "rmi" => {
            let p = parse_flags("rmi", RMI, rest, true)?;
            let mut query = Vec::new();
            if p.on("force") {
                query.push(("force", "1".to_owned()));
            }
            if p.on("no-prune") {
                query.push(("noprune", "1".to_owned()));
            }
            each("rmi", "IMAGE", &p.args, |image| {
                ApiRequest::new("DELETE", format!("/images/{}", image_path(image)), &query)
            })
        }
        "build" => build(rest),
        other => bail!(
            "moat policy check does not know `docker {other}`; give the request itself: \
             check USER METHOD PATH [BODY]"
        ),
    }
}

/// `docker run` (`start_it`) and `docker create`.
fn run(argv: &[String], start_it: bool) -> Result<Vec<ApiRequest>> {
    let command = if start_it { "run" } else { "create" };
    let p = parse_flags(command, RUN, argv, false)?;
    let Some((image, cmd)) = p.args.split_first() else {
        bail!("docker {command} needs an IMAGE");
    };
    let mut config = ContainerConfig {
        image: image.clone(),
        cmd: cmd.to_vec(),
        ..ContainerConfig::default()
    };
    let detach = p.on("detach") || !start_it;
    let interactive = p.on("interactive");
    config.tty = p.on("tty");
    config.open_stdin = interactive;
    config.attach_stdin = interactive && !detach;
    config.stdin_once = interactive && !detach;
    config.attach_stdout = !detach;
    config.attach_stderr = !detach;

    let mut volumes = BTreeMap::new();
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut mount_options = Vec::new();
    let mut name = None;
    let mut pull_always = false;
    let host = &mut config.host_config;
    host.network_mode = "default".into();
    for (flag, value) in &p.flags {
        let value = value.clone();
        match *flag {
            "name" => name = Some(value),
            "env" => config.env.push(value),
            "user" => config.user = value,
            "workdir" => config.working_dir = value,
            "hostname" => config.hostname = value,
            "domainname" => config.domainname = value,
            "entrypoint" => {
                config.entrypoint = vec![value].into_iter().filter(|v| !v.is_empty()).collect()
            }
            "label" => {
                let (key, val) = value.split_once('=').unwrap_or((&value, ""));
                config.labels.insert(key.to_owned(), val.to_owned());
            }
            "stop-signal" => config.stop_signal = value,
            "stop-timeout" => config.stop_timeout = Some(number(flag, &value)?),
            "privileged" => host.privileged = bool_value(&value),
            "read-only" => host.readonly_rootfs = bool_value(&value),
            "rm" => host.auto_remove = bool_value(&value),
            "init" => host.init = Some(bool_value(&value)),
            "cap-add" => host.cap_add.push(value),
            "cap-drop" => host.cap_drop.push(value),
            "cgroup-parent" => host.cgroup_parent = value,
            "network" => host.network_mode = value,
            "pid" => host.pid_mode = value,
            "ipc" => host.ipc_mode = value,
            "uts" => host.uts_mode = value,
            "userns" => host.userns_mode = value,
            "cgroupns" => host.cgroupns_mode = value,
            "pids-limit" => host.pids_limit = Some(number(flag, &value)?),
            "add-host" => host.extra_hosts.push(value),
            "tmpfs" => {
                let (path, options) = value.split_once(':').unwrap_or((&value, ""));
                host.tmpfs.insert(path.to_owned(), options.to_owned());
            }
            "security-opt" => host.security_opt.push(security_option(&value)?),
            "device" => host.devices.push(device(&value)?),
            "volume" => match volume(&value)? {
                Volume::Bind(bind) => host.binds.push(bind),
                Volume::Anonymous(path) => {
                    volumes.insert(path, json!({}));
                }
            },
            "mount" => {
                let (mount, driver) = mount(&value)?;
                host.mounts.push(mount);
                mount_options.push(driver);
            }
            "publish" => {
                for (port, binding) in publish(&value)? {
                    ports.entry(port).or_default().push(binding);
                }
            }
            "pull" => match value.as_str() {
                "always" => pull_always = true,
                "missing" | "never" => {}
                other => bail!("--pull {other}: expected always, missing or never"),
            },
            _ => {}
        }
    }

    let mut body = serde_json::to_value(&config).context("serializing the container config")?;
    if !ports.is_empty() {
        body["ExposedPorts"] = ports.keys().map(|p| (p.clone(), json!({}))).collect();
        body["HostConfig"]["PortBindings"] = serde_json::to_value(&ports)?;
    }
    if !volumes.is_empty() {
        body["Volumes"] = serde_json::to_value(&volumes)?;
    }
    for (i, driver) in mount_options.into_iter().enumerate() {
        if let Some(driver) = driver {
            body["HostConfig"]["Mounts"][i]["VolumeOptions"] = json!({ "DriverConfig": driver });
        }
    }

    let mut out = Vec::new();
    if pull_always {
        let (repo, tag) = split_reference(image)?;
        out.push(ApiRequest::new(
            "POST",
            "/images/create".into(),
            &[
                ("fromImage", repo),
                ("tag", tag.unwrap_or_else(|| "latest".into())),
            ],
        ));
    }
    let query: Vec<(&str, String)> = name.iter().map(|n| ("name", n.clone())).collect();
    out.push(
        ApiRequest::new("POST", "/containers/create".into(), &query)
            .with_body(body)
            .on_created(),
    );
    if start_it {
        let container = name.as_deref().unwrap_or(NEW_CONTAINER);
        let path = format!("/containers/{}", segment(container));
        if !detach {
            out.push(attach_request(&path, interactive).on_created());
            let condition = if config.host_config.auto_remove {
                "removed"
            } else {
                "next-exit"
            };
            out.push(
                ApiRequest::new(
                    "POST",
                    format!("{path}/wait"),
                    &[("condition", condition.to_owned())],
                )
                .on_created(),
            );
        }
        out.push(ApiRequest::new("POST", format!("{path}/start"), &[]).on_created());
    }
    Ok(out)
}

fn attach_request(container_path: &str, stdin: bool) -> ApiRequest {
    let mut query = vec![("stderr", "1".to_owned())];
    if stdin {
        query.push(("stdin", "1".to_owned()));
    }
    query.push(("stdout", "1".to_owned()));
    query.push(("stream", "1".to_owned()));
    ApiRequest::new("POST", format!("{container_path}/attach"), &query)
}

/// `docker exec`: create the exec instance, start it, and (attached) read
/// its exit code.
fn exec(argv: &[String]) -> Result<Vec<ApiRequest>> {
    let p = parse_flags("exec", EXEC, argv, false)?;
    let Some((container, cmd)) = p.args.split_first() else {
        bail!("docker exec needs a CONTAINER and a COMMAND");
    };
    if cmd.is_empty() {
        bail!("docker exec needs a COMMAND after the container");
    }
    let detach = p.on("detach");
    let interactive = p.on("interactive");
    let mut config = ExecConfig {
        cmd: cmd.to_vec(),
        tty: p.on("tty"),
        privileged: p.on("privileged"),
        attach_stdin: interactive && !detach,
        attach_stdout: !detach,
        attach_stderr: !detach,
        ..ExecConfig::default()
    };
    for (flag, value) in &p.flags {
        match *flag {
            "env" => config.env.push(value.clone()),
            "user" => config.user = value.clone(),
            "workdir" => config.working_dir = value.clone(),
            "detach-keys" => config.detach_keys = value.clone(),
            _ => {}
        }
    }
    let start = ExecStartConfig {
        detach,
        tty: config.tty,
    };
    let exec_path = format!("/exec/{NEW_EXEC}");
    let mut out = vec![
        ApiRequest::new(
            "POST",
            format!("/containers/{}/exec", segment(container)),
            &[],
        )
        .with_body(serde_json::to_value(&config)?),
        ApiRequest::new("POST", format!("{exec_path}/start"), &[])
            .with_body(serde_json::to_value(&start)?),
    ];
    if !detach {
        out.push(ApiRequest::new("GET", format!("{exec_path}/json"), &[]));
    }
    Ok(out)
}

/// `docker build`, as the classic builder sends it: the context is the
/// streamed body (never judged), the decision rests on the query.
fn build(argv: &[String]) -> Result<Vec<ApiRequest>> {
    let p = parse_flags("build", BUILD, argv, true)?;
    exactly::<1>("build", "PATH | URL | -", &p.args)?;
    let mut query = Vec::new();
    for (flag, value) in &p.flags {
        match *flag {
            "tag" => query.push(("t", value.clone())),
            "file" => query.push(("dockerfile", value.clone())),
            "network" => query.push(("networkmode", value.clone())),
            "cgroup-parent" => query.push(("cgroupparent", value.clone())),
            "target" => query.push(("target", value.clone())),
            "no-cache" if bool_value(value) => query.push(("nocache", "1".into())),
            "pull" if bool_value(value) => query.push(("pull", "1".into())),
            _ => {}
        }
    }
    Ok(vec![ApiRequest::new("POST", "/build".into(), &query)])
}

enum Volume {
    /// `SRC:DST[:OPTS]`, with a relative source made absolute as the
    /// docker CLI does.
    Bind(String),
    /// `-v /data`: an anonymous volume (`Config.Volumes`).
    Anonymous(String),
}

fn volume(spec: &str) -> Result<Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [path] => Ok(Volume::Anonymous((*path).to_owned())),
        [source, rest @ ..] if rest.len() <= 2 => {
            if source.is_empty() {
                bail!("-v {spec}: no source");
            }
            let source = if source.starts_with('.') {
                let cwd = std::env::current_dir().context("the current directory")?;
                cwd.join(source).display().to_string()
            } else {
                (*source).to_owned()
            };
            Ok(Volume::Bind(
                std::iter::once(source.as_str())
                    .chain(rest.iter().copied())
                    .collect::<Vec<_>>()
                    .join(":"),
            ))
        }
        _ => bail!("-v {spec}: expected SOURCE:TARGET[:OPTIONS] or a container path"),
    }
}

/// `--mount type=bind,source=/x,target=/y,readonly`, and for a volume its
/// driver and options (`volume-driver=`, `volume-opt=k=v`).
fn mount(spec: &str) -> Result<(MountSpec, Option<Value>)> {
    let mut mount = MountSpec {
        r#type: "volume".into(),
        ..MountSpec::default()
    };
    let mut driver: Option<String> = None;
    let mut options = BTreeMap::new();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let required = || value.with_context(|| format!("--mount {spec}: {key} needs a value"));
        match key {
            "type" => mount.r#type = required()?.to_owned(),
            "source" | "src" => mount.source = required()?.to_owned(),
            "target" | "destination" | "dst" => mount.target = required()?.to_owned(),
            "readonly" | "ro" => mount.read_only = value.is_none_or(bool_value),
            "volume-driver" => driver = Some(required()?.to_owned()),
            "volume-opt" => {
                let option = required()?;
                let (k, v) = option.split_once('=').unwrap_or((option, ""));
                options.insert(k.to_owned(), v.to_owned());
            }
            "bind-propagation" | "bind-recursive" | "bind-nonrecursive" | "consistency"
            | "volume-nocopy" | "volume-label" | "volume-subpath" | "tmpfs-size" | "tmpfs-mode" => {
            }
            other => bail!("--mount {spec}: unexpected key {other:?}"),
        }
    }
    if mount.target.is_empty() {
        bail!("--mount {spec}: no target");
    }
    if mount.r#type == "bind" && mount.source.is_empty() {
        bail!("--mount {spec}: a bind mount needs a source");
    }
    let driver = (driver.is_some() || !options.is_empty())
        .then(|| json!({ "Name": driver.unwrap_or_default(), "Options": options }));
    Ok((mount, driver))
}

/// `--device SRC[:DST][:PERMS]`, read as the docker CLI reads it.
fn device(spec: &str) -> Result<DeviceMapping> {
    let parts: Vec<&str> = spec.split(':').collect();
    let mode = |s: &str| !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c));
    let (source, target, permissions) = match parts.as_slice() {
        [source] => (*source, "", "rwm"),
        [source, second] if mode(second) => (*source, "", *second),
        [source, target] => (*source, *target, "rwm"),
        [source, target, permissions] => (*source, *target, *permissions),
        _ => bail!("--device {spec}: expected SOURCE[:TARGET][:PERMISSIONS]"),
    };
    Ok(DeviceMapping {
        path_on_host: source.to_owned(),
        path_in_container: if target.is_empty() { source } else { target }.to_owned(),
        cgroup_permissions: permissions.to_owned(),
    })
}

/// `--security-opt`: `key=value` (or `key:value`), and for a seccomp
/// profile file its contents, which the docker CLI sends in its place.
fn security_option(option: &str) -> Result<String> {
    let (key, value) = match option.split_once('=') {
        Some(kv) => kv,
        None if option == "no-new-privileges" => return Ok(option.to_owned()),
        None => option
            .split_once(':')
            .with_context(|| format!("--security-opt {option}: expected KEY=VALUE"))?,
    };
    if key == "seccomp" && value != "unconfined" && !value.trim_start().starts_with('{') {
        let profile = std::fs::read_to_string(value)
            .with_context(|| format!("--security-opt seccomp: reading {value}"))?;
        let compact: Value = serde_json::from_str(&profile)
            .with_context(|| format!("--security-opt seccomp: {value} is not JSON"))?;
        return Ok(format!("seccomp={compact}"));
    }
    Ok(format!("{key}={value}"))
}

/// `-p [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, with port ranges, as
/// Docker's `nat.ParsePortSpec` expands it: `("80/tcp", {"HostIp",
/// "HostPort"})` per container port.
fn publish(spec: &str) -> Result<Vec<(String, Value)>> {
    let bad = |why: &str| anyhow::anyhow!("-p {spec}: {why}");
    let (ports, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    // An IPv6 host address is bracketed: [::1]:80:80.
    let (ip, rest) = match ports.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after.split_once("]:").ok_or_else(|| bad("unclosed ["))?;
            (ip.to_owned(), rest)
        }
        None => (String::new(), ports),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip.is_empty(), parts.as_slice()) {
        (true, [container]) => (String::new(), "", *container),
        (true, [host, container]) => (String::new(), *host, *container),
        (true, [ip, host, container]) => ((*ip).to_owned(), *host, *container),
        (false, [host, container]) => (ip, *host, *container),
        _ => return Err(bad("expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]")),
    };
    let range = |s: &str| -> Result<(u16, u16)> {
        let (low, high) = s.split_once('-').unwrap_or((s, s));
        let (low, high) = (low.parse::<u16>(), high.parse::<u16>());
        match (low, high) {
            (Ok(l), Ok(h)) if l <= h => Ok((l, h)),
            _ => Err(bad(&format!("{s:?} is not a port or a range"))),
        }
    };
    let (c_low, c_high) = range(container)?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(range(host)?)
    };
    if let Some((h_low, h_high)) = host_range
        && c_high - c_low != h_high - h_low
        && c_low != c_high
    {
        return Err(bad("the host and container ranges differ in size"));
    }
    Ok((0..=c_high - c_low)
        .map(|i| {
            let host_port = match host_range {
                None => String::new(),
                Some((low, high)) if c_low == c_high && low != high => format!("{low}-{high}"),
                Some((low, _)) => (low + i).to_string(),
            };
            (
                format!("{}/{proto}", c_low + i),
                json!({ "HostIp": ip, "HostPort": host_port }),
            )
        })
        .collect())
}

/// An image reference as the docker CLI splits it for `fromImage`/`tag`
/// and push: the name, and the tag or digest if there is one.
fn split_reference(reference: &str) -> Result<(String, Option<String>)> {
    if reference.is_empty() {
        bail!("empty image reference");
    }
    if let Some((name, digest)) = reference.split_once('@') {
        return Ok((name.to_owned(), Some(digest.to_owned())));
    }
    // A `:` after the last `/` is a tag; one before it is a registry port.
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            Ok((
                reference[..at].to_owned(),
                Some(reference[at + 1..].to_owned()),
            ))
        }
        None => Ok((reference.to_owned(), None)),
    }
}

fn bool_value(value: &str) -> bool {
    matches!(value, "true" | "1" | "t" | "T" | "TRUE" | "True")
}

fn number(flag: &str, value: &str) -> Result<i64> {
    value
        .parse()
        .with_context(|| format!("--{flag} {value}: not a number"))
}

/// A path segment: a container, volume or network name.
fn segment(name: &str) -> String {
    encode(name, b"-._~!$&'()*+,;=:@")
}

/// An image name in a path: it may span segments.
fn image_path(name: &str) -> String {
    encode(name, b"-._~!$&'()*+,;=:@/")
}

/// Percent-encodes every byte but ASCII letters, digits and `keep`.
fn encode(value: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn no_args(command: &str, p: &Parsed) -> Result<()> {
    if let Some(arg) = p.args.first() {
        bail!("docker {command} takes no argument ({arg:?})");
    }
    Ok(())
}

fn exactly<'a, const N: usize>(
    command: &str,
    what: &str,
    args: &'a [String],
) -> Result<[&'a String; N]> {
    let refs: Vec<&String> = args.iter().collect();
    refs.try_into()
        .map_err(|_| anyhow::anyhow!("docker {command} takes {what}"))
}

fn nonempty<'a>(command: &str, what: &str, args: &'a [String]) -> Result<&'a [String]> {
    if args.is_empty() {
        bail!("docker {command} needs at least one {what}");
    }
    Ok(args)
}

fn each(
    command: &str,
    what: &str,
    args: &[String],
    request: impl Fn(&str) -> ApiRequest,
) -> Result<Vec<ApiRequest>> {
    Ok(nonempty(command, what, args)?
        .iter()
        .map(|a| request(a))
        .collect())
}

/// A flag a docker command takes: its long name, its one-letter form, and
/// whether it takes a value.
#[derive(Clone, Copy)]
struct Flag {
    long: &'static str,
    short: Option<char>,
    value: bool,
}

const fn val(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        value: true,
    }
}

const fn on(long: &'static str, short: Option<char>) -> Flag {
    Flag {
        long,
        short,
        value: false,
    }
}

/// What a command line said: flags by their long name (booleans as
/// `true`/`false`), in order, and the arguments.
struct Parsed {
    flags: Vec<(&'static str, String)>,
    args: Vec<String>,
}

impl Parsed {
    /// A boolean flag's last value.
    fn on(&self, long: &str) -> bool {
        self.value(long).is_some_and(bool_value)
    }

    /// A flag's last value.
    fn value(&self, long: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(name, _)| *name == long)
            .map(|(_, v)| v.as_str())
    }
}

/// Older spellings the docker CLI still takes.
fn alias(long: &str) -> &str {
    match long {
        "net" => "network",
        "net-alias" => "network-alias",
        "timeout" => "time",
        "dns-opt" => "dns-option",
        other => other,
    }
}

/// pflag's reading: `--long[=V]`, `--long V`, `-abc` (booleans), `-pV`,
/// `-p V`, `--` ends the flags. Without `interspersed`, the first argument
/// ends them too (`docker run IMAGE CMD -x`: `-x` is the command's).
fn parse_flags(
    command: &str,
    specs: &[Flag],
    argv: &[String],
    interspersed: bool,
) -> Result<Parsed> {
    let mut flags = Vec::new();
    let mut args = Vec::new();
    let mut i = 0;
    let unknown = |flag: &str| {
        anyhow::anyhow!(
            "docker {command}: unknown flag {flag} (moat policy check reads the flags \
             of docker 28; give the request itself with check USER METHOD PATH [BODY])"
        )
    };
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "--" {
            args.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let name = alias(name);
            let spec = specs
                .iter()
                .find(|f| f.long == name)
                .ok_or_else(|| unknown(arg))?;
            let value = match (spec.value, inline) {
                (_, Some(v)) => v.to_owned(),
                (true, None) => {
                    i += 1;
                    argv.get(i - 1)
                        .with_context(|| format!("docker {command}: {arg} needs a value"))?
                        .clone()
                }
                (false, None) => "true".to_owned(),
            };
            flags.push((spec.long, value));
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (at, c) in shorts.char_indices() {
                let spec = specs
                    .iter()
                    .find(|f| f.short == Some(c))
                    .ok_or_else(|| unknown(&format!("-{c}")))?;
                if !spec.value {
                    flags.push((spec.long, "true".to_owned()));
                    continue;
                }
                let attached = &shorts[at + c.len_utf8()..];
                let value = if attached.is_empty() {
                    i += 1;
                    argv.get(i - 1)
                        .with_context(|| format!("docker {command}: -{c} needs a value"))?
                        .clone()
                } else {
                    attached.strip_prefix('=').unwrap_or(attached).to_owned()
                };
                flags.push((spec.long, value));
                break;
            }
        } else if interspersed {
            args.push(arg.clone());
        } else {
            args.extend(argv[i - 1..].iter().cloned());
            break;
        }
    }
    Ok(Parsed { flags, args })
}

const GLOBAL: &[Flag] = &[
    val("config", None),
    val("context", Some('c')),
    on("debug", Some('D')),
    val("host", Some('H')),
    val("log-level", Some('l')),
    on("tls", None),
    val("tlscacert", None),
    val("tlscert", None),
    val("tlskey", None),
    on("tlsverify", None),
];

const RUN: &[Flag] = &[
    val("add-host", None),
    val("annotation", None),
    val("attach", Some('a')),
    val("blkio-weight", None),
    val("blkio-weight-device", None),
    val("cap-add", None),
    val("cap-drop", None),
    val("cgroup-parent", None),
    val("cgroupns", None),
    val("cidfile", None),
    val("cpu-count", None),
    val("cpu-percent", None),
    val("cpu-period", None),
    val("cpu-quota", None),
    val("cpu-rt-period", None),
    val("cpu-rt-runtime", None),
    val("cpu-shares", Some('c')),
    val("cpus", None),
    val("cpuset-cpus", None),
    val("cpuset-mems", None),
    on("detach", Some('d')),
    val("detach-keys", None),
    val("device", None),
    val("device-cgroup-rule", None),
    val("device-read-bps", None),
    val("device-read-iops", None),
    val("device-write-bps", None),
    val("device-write-iops", None),
    on("disable-content-trust", None),
    val("dns", None),
    val("dns-option", None),
    val("dns-search", None),
    val("domainname", None),
    val("entrypoint", None),
    val("env", Some('e')),
    val("env-file", None),
    val("expose", None),
    val("gpus", None),
    val("group-add", None),
    val("health-cmd", None),
    val("health-interval", None),
    val("health-retries", None),
    val("health-start-interval", None),
    val("health-start-period", None),
    val("health-timeout", None),
    val("hostname", Some('h')),
    on("init", None),
    on("interactive", Some('i')),
    val("ip", None),
    val("ip6", None),
    val("ipc", None),
    val("isolation", None),
    val("kernel-memory", None),
    val("label", Some('l')),
    val("label-file", None),
    val("link", None),
    val("link-local-ip", None),
    val("log-driver", None),
    val("log-opt", None),
    val("mac-address", None),
    val("memory", Some('m')),
    val("memory-reservation", None),
    val("memory-swap", None),
    val("memory-swappiness", None),
    val("mount", None),
    val("name", None),
    val("network", None),
    val("network-alias", None),
    on("no-healthcheck", None),
    on("oom-kill-disable", None),
    val("oom-score-adj", None),
    val("pid", None),
    val("pids-limit", None),
    val("platform", None),
    on("privileged", None),
    val("publish", Some('p')),
    on("publish-all", Some('P')),
    val("pull", None),
    on("quiet", Some('q')),
    on("read-only", None),
    val("restart", None),
    on("rm", None),
    val("runtime", None),
    val("security-opt", None),
    val("shm-size", None),
    on("sig-proxy", None),
    val("stop-signal", None),
    val("stop-timeout", None),
    val("storage-opt", None),
    val("sysctl", None),
    val("tmpfs", None),
    on("tty", Some('t')),
    val("ulimit", None),
    val("user", Some('u')),
    val("userns", None),
    val("uts", None),
    val("volume", Some('v')),
    val("volume-driver", None),
    val("volumes-from", None),
    val("workdir", Some('w')),
];

const EXEC: &[Flag] = &[
    on("detach", Some('d')),
    val("detach-keys", None),
    val("env", Some('e')),
    val("env-file", None),
    on("interactive", Some('i')),
    on("privileged", None),
    on("tty", Some('t')),
    val("user", Some('u')),
    val("workdir", Some('w')),
];

const PS: &[Flag] = &[
    on("all", Some('a')),
    val("filter", Some('f')),
    val("format", None),
    val("last", Some('n')),
    on("latest", Some('l')),
    on("no-trunc", None),
    on("quiet", Some('q')),
    on("size", Some('s')),
];

const IMAGES: &[Flag] = &[
    on("all", Some('a')),
    on("digests", None),
    val("filter", Some('f')),
    val("format", None),
    on("no-trunc", None),
    on("quiet", Some('q')),
    on("tree", None),
];

const LOGS: &[Flag] = &[
    on("details", None),
    on("follow", Some('f')),
    val("since", None),
    val("tail", Some('n')),
    on("timestamps", Some('t')),
    val("until", None),
];

const RM: &[Flag] = &[
    on("force", Some('f')),
    on("link", Some('l')),
    on("volumes", Some('v')),
];

const STOP: &[Flag] = &[val("signal", Some('s')), val("time", Some('t'))];

const START: &[Flag] = &[
    on("attach", Some('a')),
    val("checkpoint", None),
    val("checkpoint-dir", None),
    val("detach-keys", None),
    on("interactive", Some('i')),
];

const KILL: &[Flag] = &[val("signal", Some('s'))];

const INSPECT: &[Flag] = &[
    val("format", Some('f')),
    on("size", Some('s')),
    val("type", None),
];

const PULL: &[Flag] = &[
    on("all-tags", Some('a')),
    on("disable-content-trust", None),
    val("platform", None),
    on("quiet", Some('q')),
];

const PUSH: &[Flag] = PULL;

const RMI: &[Flag] = &[
    on("force", Some('f')),
    on("no-prune", None),
    val("platform", None),
];

const BUILD: &[Flag] = &[
    val("add-host", None),
    val("build-arg", None),
    val("cache-from", None),
    val("cgroup-parent", None),
    on("compress", None),
    val("cpu-period", None),
    val("cpu-quota", None),
    val("cpu-shares", Some('c')),
    val("cpuset-cpus", None),
    val("cpuset-mems", None),
    on("disable-content-trust", None),
    val("file", Some('f')),
    on("force-rm", None),
    val("iidfile", None),
    val("isolation", None),
    val("label", None),
    val("memory", Some('m')),
    val("memory-swap", None),
    val("network", None),
    on("no-cache", None),
    val("platform", None),
    on("pull", None),
    on("quiet", Some('q')),
    on("rm", None),
    val("security-opt", None),
    val("shm-size", None),
    on("squash", None),
    val("tag", Some('t')),
    val("target", None),
    val("ulimit", None),
];

#[cfg(test)]
mod tests;
