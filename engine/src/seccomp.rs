//! Docker's default seccomp profile (embedded as data) turned into the OCI
//! runtime spec's form for one container.
//!
//! The profile's rules carry conditions: `includes`/`excludes` on the
//! container's capabilities, the architecture and the kernel version. They
//! are resolved here, per container, exactly as dockerd resolves them; a
//! rule that gives `clone` its namespace flags only to a container with
//! `CAP_SYS_ADMIN`, for example, is kept or dropped accordingly.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::caps;
use crate::error::ConfigError;
use moat_api::container::null_default;

const DOCKER_DEFAULT: &str = include_str!("../data/docker-default-seccomp.json");

/// A profile in Docker's format (what `--security-opt seccomp=FILE` sends).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "null_default")]
    architectures: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    syscalls: Vec<DockerRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerRule {
    #[serde(default, deserialize_with = "null_default")]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    args: Vec<DockerArg>,
    #[serde(default, deserialize_with = "null_default")]
    includes: Filter,
    #[serde(default, deserialize_with = "null_default")]
    excludes: Filter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default, deserialize_with = "null_default")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The default profile for a container with `caps`.
pub fn docker_default(caps: &HashSet<Capability>) -> LinuxSeccomp {
    from_docker_json(DOCKER_DEFAULT, caps).expect("the embedded profile converts")
}

/// A profile in Docker's JSON format, resolved for a container with `caps`.
pub fn from_docker_json(
    profile: &str,
    caps: &HashSet<Capability>,
) -> Result<LinuxSeccomp, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: "HostConfig.SecurityOpt",
        reason: format!("seccomp profile: {reason}"),
    };
    let profile: DockerProfile =
        serde_json::from_str(profile).map_err(|e| invalid(e.to_string()))?;
    let cap_names: std::collections::BTreeSet<String> =
        caps.iter().map(|c| caps::name(*c)).collect();
    let kernel = kernel_version();
    let arch = go_arch();

    let mut rules = Vec::new();
    for rule in &profile.syscalls {
        let inc = &rule.includes;
        let exc = &rule.excludes;
        let applies = inc.caps.iter().all(|c| cap_names.contains(c))
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch))
            && inc
                .min_kernel
                .as_deref()
                .is_none_or(|min| kernel >= parse_kernel(min))
            && !exc.caps.iter().any(|c| cap_names.contains(c))
            && !exc.arches.iter().any(|a| a == arch);
        if !applies {
            continue;
        }
        let mut names = rule.names.clone();
        names.extend(rule.name.clone());
        let mut out = json!({ "names": names, "action": rule.action });
        if let Some(errno) = rule.errno_ret {
            out["errnoRet"] = json!(errno);
        }
        if !rule.args.is_empty() {
            let args: Vec<Value> = rule.args.iter().map(oci_arg).collect();
            out["args"] = json!(args);
        }
        rules.push(out);
    }

    let mut architectures = profile.architectures.clone();
    let native = native_scmp_arch();
    for map in &profile.arch_map {
        if map.architecture == native {
            architectures.push(map.architecture.clone());
            architectures.extend(map.sub_architectures.iter().cloned());
        }
    }
    let mut oci = json!({
        "defaultAction": profile.default_action,
        "architectures": architectures,
        "syscalls": rules,
    });
    if let Some(errno) = profile.default_errno_ret {
        oci["defaultErrnoRet"] = json!(errno);
    }
    serde_json::from_value(oci).map_err(|e| invalid(e.to_string()))
}

/// libcontainer 0.7 hands a masked-equal comparison to libseccomp as
/// (mask = valueTwo, datum = value); Docker and runc mean (mask = value,
/// datum = valueTwo). Swapping the two keeps Docker's meaning: without it
/// the rule that forbids `clone(CLONE_NEWUSER)` would always match and
/// allow it. `tests::clone_rule_keeps_its_meaning` pins this.
fn oci_arg(arg: &DockerArg) -> Value {
    let (value, value_two) = if arg.op == "SCMP_CMP_MASKED_EQ" {
        (arg.value_two, arg.value)
    } else {
        (arg.value, arg.value_two)
    };
    json!({ "index": arg.index, "value": value, "valueTwo": value_two, "op": arg.op })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn native_scmp_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_NATIVE",
    }
}

fn kernel_version() -> (u32, u32) {
    parse_kernel(&std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default())
}

fn parse_kernel(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompOperator;

    fn rules_for<'a>(
        profile: &'a LinuxSeccomp,
        syscall: &str,
    ) -> Vec<&'a oci_spec::runtime::LinuxSyscall> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.names().iter().any(|n| n == syscall))
            .collect()
    }

    #[test]
    fn default_caps_do_not_get_the_admin_syscalls() {
        let profile = docker_default(&caps::DOCKER_DEFAULT.into_iter().collect());
        for syscall in ["unshare", "mount", "keyctl", "setns", "bpf"] {
            let allowed = rules_for(&profile, syscall)
                .iter()
                .any(|r| r.args().as_ref().is_none_or(|a| a.is_empty()));
            assert!(!allowed, "{syscall} must not be allowed unconditionally");
        }
        assert!(!rules_for(&profile, "read").is_empty());
    }

    #[test]
    fn sys_admin_brings_mount() {
        let mut set: HashSet<Capability> = caps::DOCKER_DEFAULT.into_iter().collect();
        set.insert(Capability::SysAdmin);
        let profile = docker_default(&set);
        assert!(!rules_for(&profile, "mount").is_empty());
        assert!(!rules_for(&profile, "unshare").is_empty());
    }

    #[test]
    fn clone_rule_keeps_its_meaning() {
        let profile = docker_default(&caps::DOCKER_DEFAULT.into_iter().collect());
        let clone = rules_for(&profile, "clone");
        let masked: Vec<_> = clone
            .iter()
            .flat_map(|r| r.args().clone().unwrap_or_default())
            .filter(|a| a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq)
            .collect();
        assert!(
            !masked.is_empty(),
            "the default profile conditions clone on its flags"
        );
        for arg in masked {
            // Docker: mask = the namespace flags (value), datum = 0 (valueTwo).
            assert_eq!(arg.value(), 0, "datum goes in value for libcontainer");
            assert_ne!(arg.value_two().unwrap_or(0), 0, "mask goes in valueTwo");
        }
    }

    #[test]
    fn a_malformed_profile_names_the_field() {
        let err = from_docker_json("{", &HashSet::new()).unwrap_err();
        assert!(err.to_string().contains("HostConfig.SecurityOpt"), "{err}");
    }
}
