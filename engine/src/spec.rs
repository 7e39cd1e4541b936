//! From a Docker-shaped container configuration to an OCI runtime spec,
//! with the hardening `docker run` gives by default: Docker's capability
//! set and seccomp profile, masked and read-only `/proc` and `/sys` paths, a
//! minimal `/dev` and device cgroup, private namespaces (user namespace
//! included), and the cgroup limits asked for.
//!
//! Everything a configuration gets wrong is found here, before anything is
//! created, and reported naming the field.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::error::ConfigError;
use crate::userns::IdMap;
use crate::{caps, seccomp};
use moat_api::container::ContainerConfig;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the docker-init (tini) binary is taken from for `--init`.
pub const INIT_BINARY: &str = "/usr/bin/tini-static";
const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

/// Docker's minimum memory limit.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the spec is built from besides the configuration.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub id: &'a str,
    /// The container's directory: `hostname`, `hosts` and `resolv.conf` live there.
    pub dir: &'a Path,
    /// The merged root filesystem the container sees as `/`.
    pub rootfs: &'a Path,
    /// The user namespace mapping; [`IdMap::HOST`] shares the host's.
    pub id_map: IdMap,
    /// Where named volumes live (`<volumes>/<name>/_data`).
    pub volumes: &'a Path,
    /// The parent cgroup path, e.g. `/moat`.
    pub cgroup_parent: &'a str,
}

/// A bind or volume mount the engine must prepare before the container starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    HostPath(PathBuf),
    Volume(String),
}

/// Checks the configuration and builds the spec. The process's user is
/// root here; the shim resolves `Config.User` against the image's
/// `/etc/passwd` once the root filesystem is mounted.
pub fn build(config: &ContainerConfig, cx: &SpecContext<'_>) -> Result<Spec, ConfigError> {
    let host = &config.host_config;
    let userns = userns_enabled(config)?;
    if host.privileged && userns {
        return Err(ConfigError::invalid(
            "HostConfig.Privileged",
            "privileged mode is incompatible with user namespaces; \
             run it with UsernsMode=host (as dockerd with --userns-remap requires)",
        ));
    }
    let security = SecurityOpts::parse(&host.security_opt)?;
    let capabilities = caps::resolve(host.privileged, &host.cap_add, &host.cap_drop)?;

    let mut args = config.args();
    if args.is_empty() {
        return Err(ConfigError::invalid("Cmd", "no command specified"));
    }
    if host.init == Some(true) {
        if !Path::new(INIT_BINARY).exists() {
            return Err(ConfigError::invalid(
                "HostConfig.Init",
                format!("no init binary at {INIT_BINARY} (install Debian's tini)"),
            ));
        }
        args.splice(0..0, [INIT_IN_CONTAINER.to_owned(), "--".to_owned()]);
    }
    let cwd = if config.working_dir.is_empty() {
        "/".to_owned()
    } else if config.working_dir.starts_with('/') {
        config.working_dir.clone()
    } else {
        return Err(ConfigError::invalid(
            "WorkingDir",
            format!("{:?} is not an absolute path", config.working_dir),
        ));
    };
    let hostname = hostname(config, cx.id)?;

    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(args)
        .env(environment(config, &hostname)?)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(oci)?,
        )
        .no_new_privileges(security.no_new_privileges)
        .capabilities(capability_sets(&capabilities))
        .build()
        .map_err(oci)?;
    if !security.no_new_privileges {
        // libcontainer installs the seccomp filter before dropping
        // capabilities only when this is unset; `Some(false)` would make it
        // install the filter too late, without the privilege to do so.
        process.set_no_new_privileges(None);
    }

    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules(config)?)
        .memory(memory(config)?)
        .cpu(cpu(config)?);
    // No limit is no setting: runtimes disagree on how to write "-1".
    if let Some(limit) = host.pids_limit.filter(|l| *l > 0) {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci)?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(config, userns)?)
        .cgroups_path(PathBuf::from(format!("{}/{}", cx.cgroup_parent, cx.id)))
        .resources(resources.build().map_err(oci)?);
    if userns {
        let uid = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(cx.id_map.uid)
            .size(cx.id_map.size)
            .build()
            .map_err(oci)?;
        let gid = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(cx.id_map.gid)
            .size(cx.id_map.size)
            .build()
            .map_err(oci)?;
        linux = linux.uid_mappings(vec![uid]).gid_mappings(vec![gid]);
    }
    linux = if !host.privileged && !security.unconfined_paths {
        linux
            .masked_paths(MASKED_PATHS.map(String::from).to_vec())
            .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
    } else {
        linux.masked_paths(Vec::new()).readonly_paths(Vec::new())
    };
    match (&security.seccomp, host.privileged) {
        (_, true) | (Seccomp::Unconfined, _) => {}
        (Seccomp::Default, false) => linux = linux.seccomp(seccomp::docker_default(&capabilities)),
        (Seccomp::Profile(json), false) => {
            linux = linux.seccomp(seccomp::from_docker_json(json, &capabilities)?)
        }
    }

    let mut spec = Spec::default();
    spec.set_hostname(Some(hostname));
    spec.set_root(Some(
        RootBuilder::default()
            .path(cx.rootfs)
            .readonly(host.readonly_rootfs)
            .build()
            .map_err(oci)?,
    ));
    spec.set_process(Some(process));
    spec.set_mounts(Some(mounts(config, cx)?));
    spec.set_linux(Some(linux.build().map_err(oci)?));
    spec.set_annotations(None);
    Ok(spec)
}

/// Whether the container gets its own user namespace.
pub fn userns_enabled(config: &ContainerConfig) -> Result<bool, ConfigError> {
    match config.host_config.userns_mode.as_str() {
        "" | "private" => Ok(true),
        "host" => Ok(false),
        other => Err(ConfigError::invalid(
            "HostConfig.UsernsMode",
            format!("{other:?} is not supported (use \"host\" or leave it empty)"),
        )),
    }
}

/// The host paths and volumes the container's binds and mounts name, in
/// order, with their targets; checked so that a missing source fails now.
pub fn mount_sources(config: &ContainerConfig) -> Result<Vec<(Source, String, bool)>, ConfigError> {
    let mut out = Vec::new();
    for bind in &config.host_config.binds {
        out.push(parse_bind(bind)?);
    }
    for m in &config.host_config.mounts {
        let target = absolute_target("HostConfig.Mounts", &m.target)?;
        let source = match m.r#type.as_str() {
            "bind" => host_source("HostConfig.Mounts", &m.source)?,
            "volume" => Source::Volume(volume_name("HostConfig.Mounts", &m.source)?),
            "tmpfs" => continue,
            other => {
                return Err(ConfigError::invalid(
                    "HostConfig.Mounts",
                    format!("mount type {other:?} is not supported (bind, volume or tmpfs)"),
                ));
            }
        };
        out.push((source, target, m.read_only));
    }
    Ok(out)
}

fn parse_bind(bind: &str) -> Result<(Source, String, bool), ConfigError> {
    const FIELD: &str = "HostConfig.Binds";
    let parts: Vec<&str> = bind.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(ConfigError::invalid(
                FIELD,
                format!("{bind:?} is not SOURCE:TARGET[:OPTIONS]"),
            ));
        }
    };
    let mut read_only = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" | "z" | "Z" | "nocopy" | "private" | "rprivate" | "slave" | "rslave" => {}
            other => {
                return Err(ConfigError::invalid(
                    FIELD,
                    format!("unknown option {other:?} in {bind:?}"),
                ));
            }
        }
    }
    let source = if src.starts_with('/') {
        host_source(FIELD, src)?
    } else {
        Source::Volume(volume_name(FIELD, src)?)
    };
    Ok((source, absolute_target(FIELD, dst)?, read_only))
}

fn host_source(field: &'static str, src: &str) -> Result<Source, ConfigError> {
    let path = Path::new(src);
    if !path.is_absolute() {
        return Err(ConfigError::invalid(
            field,
            format!("bind source {src:?} is not absolute"),
        ));
    }
    let real = path.canonicalize().map_err(|e| {
        ConfigError::invalid(
            field,
            format!("bind source path {src:?} does not exist: {e}"),
        )
    })?;
    // The gateway's policy judges the path as written; what is mounted must
    // be that path, not wherever a symlink (or `..` after one) leads.
    let lexical: std::path::PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if lexical
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || real != lexical
    {
        return Err(ConfigError::invalid(
            field,
            format!(
                "bind source {src:?} goes through a symlink or '..' (it is {}); give the real path",
                real.display()
            ),
        ));
    }
    Ok(Source::HostPath(real))
}

fn absolute_target(field: &'static str, dst: &str) -> Result<String, ConfigError> {
    if !dst.starts_with('/') || dst == "/" || dst.split('/').any(|s| s == "..") {
        return Err(ConfigError::invalid(
            field,
            format!("mount target {dst:?} must be an absolute path other than /, without '..'"),
        ));
    }
    Ok(dst.to_owned())
}

/// Docker's volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn volume_name(field: &'static str, name: &str) -> Result<String, ConfigError> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(ConfigError::invalid(
            field,
            format!("{name:?} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"),
        ));
    }
    Ok(name.to_owned())
}

enum Seccomp {
    Default,
    Unconfined,
    Profile(String),
}

struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: Seccomp,
    unconfined_paths: bool,
}

impl SecurityOpts {
    fn parse(opts: &[String]) -> Result<SecurityOpts, ConfigError> {
        const FIELD: &str = "HostConfig.SecurityOpt";
        let mut out = SecurityOpts {
            no_new_privileges: false,
            seccomp: Seccomp::Default,
            unconfined_paths: false,
        };
        for opt in opts {
            let (key, value) = match opt.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            match (key, value) {
                ("no-new-privileges", None | Some("true")) => out.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => out.no_new_privileges = false,
                ("seccomp", Some("unconfined")) => out.seccomp = Seccomp::Unconfined,
                ("seccomp", Some(json)) if json.trim_start().starts_with('{') => {
                    out.seccomp = Seccomp::Profile(json.to_owned())
                }
                ("systempaths", Some("unconfined")) => out.unconfined_paths = true,
                // No AppArmor or SELinux on the hosts moat supports; dockerd
                // accepts these there too and applies nothing.
                ("apparmor", Some(_)) | ("label", Some(_)) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        FIELD,
                        format!("unsupported security option {opt:?}"),
                    ));
                }
            }
        }
        Ok(out)
    }
}

fn hostname(config: &ContainerConfig, id: &str) -> Result<String, ConfigError> {
    let name = if config.hostname.is_empty() {
        id.chars().take(12).collect()
    } else {
        config.hostname.clone()
    };
    let valid = name.len() <= 63
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(ConfigError::invalid(
            "Hostname",
            format!("{name:?} is not a valid host name"),
        ));
    }
    Ok(name)
}

fn environment(config: &ContainerConfig, hostname: &str) -> Result<Vec<String>, ConfigError> {
    let mut env: Vec<String> = Vec::with_capacity(config.env.len() + 3);
    for var in &config.env {
        if var.is_empty() || var.starts_with('=') || var.contains('\0') {
            return Err(ConfigError::invalid(
                "Env",
                format!("{var:?} is not NAME=VALUE"),
            ));
        }
        env.push(var.clone());
    }
    let has = |env: &[String], name: &str| env.iter().any(|v| v.split('=').next() == Some(name));
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.insert(1, format!("HOSTNAME={hostname}"));
    }
    if config.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    Ok(env)
}

fn capability_sets(set: &HashSet<Capability>) -> oci_spec::runtime::LinuxCapabilities {
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .expect("capability sets always build")
}

fn namespaces(config: &ContainerConfig, userns: bool) -> Result<Vec<LinuxNamespace>, ConfigError> {
    let host = &config.host_config;
    let private = |field: &'static str, mode: &str, private_modes: &[&str]| {
        if mode == "host" {
            Ok(false)
        } else if private_modes.contains(&mode) {
            Ok(true)
        } else {
            Err(ConfigError::invalid(
                field,
                format!("mode {mode:?} is not supported"),
            ))
        }
    };
    let mut out = vec![ns(LinuxNamespaceType::Mount)];
    // Without a bridge, a private network namespace has loopback only:
    // Docker's `--network none`.
    if private(
        "HostConfig.NetworkMode",
        &host.network_mode,
        &["", "default", "bridge", "none"],
    )? {
        out.push(ns(LinuxNamespaceType::Network));
    }
    if private("HostConfig.PidMode", &host.pid_mode, &["", "private"])? {
        out.push(ns(LinuxNamespaceType::Pid));
    }
    if private(
        "HostConfig.IpcMode",
        &host.ipc_mode,
        &["", "private", "shareable", "none"],
    )? {
        out.push(ns(LinuxNamespaceType::Ipc));
    }
    if private("HostConfig.UTSMode", &host.uts_mode, &["", "private"])? {
        out.push(ns(LinuxNamespaceType::Uts));
    }
    if private(
        "HostConfig.CgroupnsMode",
        &host.cgroupns_mode,
        &["", "private"],
    )? {
        out.push(ns(LinuxNamespaceType::Cgroup));
    }
    if userns {
        out.push(ns(LinuxNamespaceType::User));
    }
    Ok(out)
}

fn ns(typ: LinuxNamespaceType) -> LinuxNamespace {
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .build()
        .expect("a namespace with a type builds")
}

fn memory(config: &ContainerConfig) -> Result<oci_spec::runtime::LinuxMemory, ConfigError> {
    let host = &config.host_config;
    let (limit, swap) = (host.memory, host.memory_swap);
    if limit < 0 {
        return Err(ConfigError::invalid(
            "HostConfig.Memory",
            "must not be negative",
        ));
    }
    if limit > 0 && limit < MIN_MEMORY {
        return Err(ConfigError::invalid(
            "HostConfig.Memory",
            "minimum memory limit allowed is 6MB",
        ));
    }
    if swap != 0 && swap != -1 {
        if limit == 0 {
            return Err(ConfigError::invalid(
                "HostConfig.MemorySwap",
                "set HostConfig.Memory when setting a swap limit",
            ));
        }
        if swap < limit {
            return Err(ConfigError::invalid(
                "HostConfig.MemorySwap",
                "minimum memoryswap limit should be larger than memory limit",
            ));
        }
    }
    let mut builder = LinuxMemoryBuilder::default();
    if limit > 0 {
        // As dockerd: no swap limit given means as much swap as memory.
        let total = match swap {
            0 => limit.saturating_mul(2),
            s => s,
        };
        builder = builder.limit(limit).swap(total);
    }
    builder.build().map_err(oci)
}

fn cpu(config: &ContainerConfig) -> Result<oci_spec::runtime::LinuxCpu, ConfigError> {
    let host = &config.host_config;
    let mut builder = LinuxCpuBuilder::default();
    if host.nano_cpus != 0 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        if host.nano_cpus < 10_000_000 || host.nano_cpus > cpus * 1_000_000_000 {
            return Err(ConfigError::invalid(
                "HostConfig.NanoCpus",
                format!(
                    "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
                ),
            ));
        }
        const PERIOD: u64 = 100_000;
        builder = builder
            .period(PERIOD)
            .quota(host.nano_cpus * PERIOD as i64 / 1_000_000_000);
    }
    if host.cpu_shares < 0 {
        return Err(ConfigError::invalid(
            "HostConfig.CpuShares",
            "must not be negative",
        ));
    }
    if host.cpu_shares > 0 {
        builder = builder.shares(host.cpu_shares as u64);
    }
    builder.build().map_err(oci)
}

/// Deny every device, then allow what Docker allows by default (and the
/// devices mapped in with `--device`); a privileged container gets all.
fn device_rules(config: &ContainerConfig) -> Result<Vec<LinuxDeviceCgroup>, ConfigError> {
    let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("a device rule builds")
    };
    use LinuxDeviceType::{A, B, C};
    if config.host_config.privileged {
        return Ok(vec![rule(true, A, None, None, "rwm")]);
    }
    let mut rules = vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
        rule(true, C, Some(1), Some(3), "rwm"),    // null
        rule(true, C, Some(1), Some(5), "rwm"),    // zero
        rule(true, C, Some(1), Some(7), "rwm"),    // full
        rule(true, C, Some(1), Some(8), "rwm"),    // random
        rule(true, C, Some(1), Some(9), "rwm"),    // urandom
        rule(true, C, Some(5), Some(0), "rwm"),    // tty
        rule(true, C, Some(5), Some(2), "rwm"),    // ptmx
        rule(true, C, Some(136), None, "rwm"),     // pts
        rule(true, C, Some(10), Some(200), "rwm"), // tun
    ];
    for device in &config.host_config.devices {
        let (typ, major, minor) = device_numbers(&device.path_on_host)?;
        let access = if device.cgroup_permissions.is_empty() {
            "rwm".to_owned()
        } else if device.cgroup_permissions.chars().all(|c| "rwm".contains(c)) {
            device.cgroup_permissions.clone()
        } else {
            return Err(ConfigError::invalid(
                "HostConfig.Devices",
                format!(
                    "permissions {:?} are not a subset of rwm",
                    device.cgroup_permissions
                ),
            ));
        };
        rules.push(rule(true, typ, Some(major), Some(minor), &access));
    }
    Ok(rules)
}

fn device_numbers(path: &str) -> Result<(LinuxDeviceType, i64, i64), ConfigError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::invalid("HostConfig.Devices", format!("device {path:?}: {e}")))?;
    let typ = if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(ConfigError::invalid(
            "HostConfig.Devices",
            format!("{path:?} is not a device"),
        ));
    };
    let rdev = meta.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
    ))
}

fn mounts(config: &ContainerConfig, cx: &SpecContext<'_>) -> Result<Vec<Mount>, ConfigError> {
    let host = &config.host_config;
    let m = |dst: &str, typ: &str, src: &Path, opts: &[&str]| {
        MountBuilder::default()
            .destination(dst)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .expect("a mount builds")
    };
    let sys_mode = if host.privileged { "rw" } else { "ro" };
    let mut out = vec![
        m(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        m(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        m(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        m(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        ),
        m(
            "/dev/shm",
            "tmpfs",
            Path::new("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        ),
    ];
    for file in ["hostname", "hosts", "resolv.conf"] {
        out.push(m(
            &format!("/etc/{file}"),
            "bind",
            &cx.dir.join(file),
            &["rbind", "rprivate"],
        ));
    }
    if host.init == Some(true) {
        out.push(m(
            INIT_IN_CONTAINER,
            "bind",
            Path::new(INIT_BINARY),
            &["bind", "ro"],
        ));
    }
    for (source, target, read_only) in mount_sources(config)? {
        let src = match source {
            Source::HostPath(path) => path,
            Source::Volume(name) => cx.volumes.join(name).join("_data"),
        };
        let mode = if read_only { "ro" } else { "rw" };
        out.push(m(&target, "bind", &src, &["rbind", "rprivate", mode]));
    }
    for mount in &host.mounts {
        if mount.r#type == "tmpfs" {
            let target = absolute_target("HostConfig.Mounts", &mount.target)?;
            out.push(m(
                &target,
                "tmpfs",
                Path::new("tmpfs"),
                &["nosuid", "nodev", "noexec"],
            ));
        }
    }
    for (target, opts) in &host.tmpfs {
        let target = absolute_target("HostConfig.Tmpfs", target)?;
        let mut options: Vec<&str> = vec!["nosuid", "nodev", "noexec"];
        options.extend(opts.split(',').filter(|o| !o.is_empty()));
        out.push(m(&target, "tmpfs", Path::new("tmpfs"), &options));
    }
    for device in &host.devices {
        let target = if device.path_in_container.is_empty() {
            device.path_on_host.clone()
        } else {
            device.path_in_container.clone()
        };
        let target = absolute_target("HostConfig.Devices", &target)?;
        out.push(m(
            &target,
            "bind",
            Path::new(&device.path_on_host),
            &["bind"],
        ));
    }
    Ok(out)
}

fn oci(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("(spec)", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_api::container::{DeviceMapping, HostConfig};

    fn cx<'a>(dir: &'a Path) -> SpecContext<'a> {
        SpecContext {
            id: "0123456789abcdef",
            dir,
            rootfs: dir,
            id_map: IdMap {
                uid: 100_000,
                gid: 100_000,
                size: 65536,
            },
            volumes: dir,
            cgroup_parent: "/moat",
        }
    }

    fn config(cmd: &[&str], host: HostConfig) -> ContainerConfig {
        ContainerConfig {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            host_config: host,
            ..ContainerConfig::default()
        }
    }

    fn field_of(err: ConfigError) -> &'static str {
        let ConfigError::Invalid { field, .. } = err;
        field
    }

    #[test]
    fn default_container_is_hardened_and_remapped() {
        let dir = Path::new("/tmp");
        let spec = build(&config(&["true"], HostConfig::default()), &cx(dir)).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        for t in [
            LinuxNamespaceType::User,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
        ] {
            assert!(types.contains(&t), "{t:?}");
        }
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].host_id(), 100_000);
        assert!(linux.seccomp().is_some());
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
        assert!(
            linux
                .readonly_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/sys".to_string())
        );
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(
            !caps
                .effective()
                .as_ref()
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/moat/0123456789abcdef"))
        );
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let host = HostConfig {
            memory: 32 << 20,
            pids_limit: Some(64),
            nano_cpus: 500_000_000,
            cpu_shares: 512,
            ..HostConfig::default()
        };
        let spec = build(&config(&["true"], host), &cx(Path::new("/tmp"))).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let mem = res.memory().unwrap();
        assert_eq!(mem.limit(), Some(32 << 20));
        assert_eq!(mem.swap(), Some(64 << 20));
        assert_eq!(res.pids().unwrap().limit(), 64);
        let cpu = res.cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
    }

    #[test]
    fn configurations_that_cannot_run_name_their_field() {
        let cases: Vec<(ContainerConfig, &str)> = vec![
            (config(&[], HostConfig::default()), "Cmd"),
            (
                config(
                    &["true"],
                    HostConfig {
                        memory: 1024,
                        ..Default::default()
                    },
                ),
                "HostConfig.Memory",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        memory: -1,
                        ..Default::default()
                    },
                ),
                "HostConfig.Memory",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        memory: 64 << 20,
                        memory_swap: 32 << 20,
                        ..Default::default()
                    },
                ),
                "HostConfig.MemorySwap",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        nano_cpus: 1,
                        ..Default::default()
                    },
                ),
                "HostConfig.NanoCpus",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        cap_add: vec!["NOPE".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.CapAdd",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        privileged: true,
                        ..Default::default()
                    },
                ),
                "HostConfig.Privileged",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        userns_mode: "other".into(),
                        ..Default::default()
                    },
                ),
                "HostConfig.UsernsMode",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        network_mode: "container:x".into(),
                        ..Default::default()
                    },
                ),
                "HostConfig.NetworkMode",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        security_opt: vec!["seccomp=/etc/x".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.SecurityOpt",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        binds: vec!["/nonexistent-moat:/x".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.Binds",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        binds: vec!["/tmp:relative".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.Binds",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        binds: vec!["/tmp:/x:bogus".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.Binds",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        binds: vec!["a:/x".into()],
                        ..Default::default()
                    },
                ),
                "HostConfig.Binds",
            ),
            (
                config(
                    &["true"],
                    HostConfig {
                        devices: vec![DeviceMapping {
                            path_on_host: "/etc/passwd".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
                "HostConfig.Devices",
            ),
            (
                ContainerConfig {
                    working_dir: "rel".into(),
                    ..config(&["true"], HostConfig::default())
                },
                "WorkingDir",
            ),
            (
                ContainerConfig {
                    hostname: "a b".into(),
                    ..config(&["true"], HostConfig::default())
                },
                "Hostname",
            ),
            (
                ContainerConfig {
                    env: vec!["=x".into()],
                    ..config(&["true"], HostConfig::default())
                },
                "Env",
            ),
        ];
        for (config, field) in cases {
            let err = build(&config, &cx(Path::new("/tmp"))).unwrap_err();
            assert_eq!(field_of(err), field, "{config:?}");
        }
    }

    #[test]
    fn privileged_with_host_userns_drops_the_confinement() {
        let host = HostConfig {
            privileged: true,
            userns_mode: "host".into(),
            ..HostConfig::default()
        };
        let spec = build(&config(&["true"], host), &cx(Path::new("/tmp"))).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.uid_mappings().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(|p| p.is_empty()));
    }

    #[test]
    fn bind_sources_must_be_their_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let bind = |src: String| HostConfig {
            binds: vec![format!("{src}:/data")],
            ..HostConfig::default()
        };
        let ok = build(
            &config(&["true"], bind(format!("{}/", real.display()))),
            &cx(Path::new("/tmp")),
        );
        assert!(ok.is_ok(), "{ok:?}");
        for src in [
            format!("{}/link", dir.path().display()),
            format!("{}/real/../link", dir.path().display()),
            format!("{}/real/..", dir.path().display()),
        ] {
            let err = build(
                &config(&["true"], bind(src.clone())),
                &cx(Path::new("/tmp")),
            )
            .unwrap_err();
            assert_eq!(field_of(err), "HostConfig.Binds", "{src}");
        }
    }

    #[test]
    fn binds_and_volumes_become_mounts() {
        let host = HostConfig {
            binds: vec!["/tmp:/data:ro".into(), "cache:/cache".into()],
            ..HostConfig::default()
        };
        let dir = Path::new("/var/lib/x");
        let spec = build(&config(&["true"], host), &cx(dir)).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let data = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        let cache = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/cache"))
            .unwrap();
        assert_eq!(
            cache.source().as_deref(),
            Some(Path::new("/var/lib/x/cache/_data"))
        );
    }
}
