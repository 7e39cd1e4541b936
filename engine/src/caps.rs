//! Capabilities: Docker's default set, and `CapAdd`/`CapDrop` applied to it
//! the way dockerd applies them.

use std::collections::HashSet;

use oci_spec::runtime::Capability;

use crate::error::ConfigError;

/// The capabilities `docker run` gives a container by default.
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel knows of.
pub fn all() -> HashSet<Capability> {
    caps::all()
        .into_iter()
        .filter_map(|c| parse(&c.to_string()).ok())
        .collect()
}

/// `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin` → the capability.
pub fn parse(name: &str) -> Result<Capability, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full)).map_err(|_| name.to_owned())
}

/// The set a container runs with: Docker's default (or all, when
/// privileged), then `CapDrop` (where `ALL` empties it), then `CapAdd`
/// (where `ALL` fills it). Unknown names are an error naming the field.
pub fn resolve(
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<HashSet<Capability>, ConfigError> {
    let mut set: HashSet<Capability> = if privileged {
        all()
    } else {
        DOCKER_DEFAULT.into_iter().collect()
    };
    let named =
        |field: &'static str, names: &[String]| -> Result<(bool, Vec<Capability>), ConfigError> {
            let mut every = false;
            let mut caps = Vec::new();
            for name in names {
                if name.eq_ignore_ascii_case("ALL") {
                    every = true;
                } else {
                    caps.push(parse(name).map_err(|value| ConfigError::Invalid {
                        field,
                        reason: format!("unknown capability {value:?}"),
                    })?);
                }
            }
            Ok((every, caps))
        };
    let (drop_all, dropped) = named("HostConfig.CapDrop", drop)?;
    let (add_all, added) = named("HostConfig.CapAdd", add)?;
    if drop_all {
        set.clear();
    }
    for c in dropped {
        set.remove(&c);
    }
    if add_all {
        set.extend(all());
    }
    set.extend(added);
    Ok(set)
}

/// The name Docker's seccomp profile uses for a capability (`CAP_SYS_ADMIN`).
pub fn name(cap: Capability) -> String {
    serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_add_and_drop() {
        let set = resolve(false, &["net_admin".into()], &["CAP_CHOWN".into()]).unwrap();
        assert!(set.contains(&Capability::NetAdmin));
        assert!(!set.contains(&Capability::Chown));
        assert_eq!(set.len(), DOCKER_DEFAULT.len());
    }

    #[test]
    fn drop_all_then_add_one() {
        let set = resolve(false, &["KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![Capability::Kill]);
    }

    #[test]
    fn privileged_has_everything() {
        let set = resolve(true, &[], &[]).unwrap();
        assert!(set.contains(&Capability::SysAdmin));
        assert!(set.len() > 35);
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = resolve(false, &["FLY".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("HostConfig.CapAdd"), "{err}");
        assert_eq!(name(Capability::SysAdmin), "CAP_SYS_ADMIN");
    }
}
