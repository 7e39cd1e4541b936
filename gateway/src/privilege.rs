//! Least privilege: started as root, the gateway reads its keys, binds
//! its port, gives its directories to its own user, then becomes that user
//! with no capabilities (bounding set emptied too) and no_new_privs set.
//! It never needs root again.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Group, Uid, User};

/// The account the gateway runs as.
pub const GATEWAY_USER: &str = "moat-gateway";

/// The group that may use the engine's socket.
pub const ENGINE_GROUP: &str = "moat";

/// The gateway's account, created (system user, no home, no shell, in the
/// engine's group) if missing.
pub fn ensure_account() -> Result<User> {
    // Another process may be creating them at the same moment (two
    // gateways starting): a failure that leaves them existing is success.
    if Group::from_name(ENGINE_GROUP)?.is_none()
        && let Err(err) = run(Command::new("groupadd").args(["--system", ENGINE_GROUP]))
        && Group::from_name(ENGINE_GROUP)?.is_none()
    {
        return Err(err);
    }
    if User::from_name(GATEWAY_USER)?.is_none()
        && let Err(err) = run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--groups",
            ENGINE_GROUP,
            GATEWAY_USER,
        ]))
        && User::from_name(GATEWAY_USER)?.is_none()
    {
        return Err(err);
    }
    User::from_name(GATEWAY_USER)?.with_context(|| format!("no user {GATEWAY_USER} after useradd"))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// Gives `dir` to `user` with `mode` (created if missing).
pub fn give_dir(dir: &Path, user: &User, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

/// Lets `user`'s group read the PKI directory's public files (mode 0750,
/// group = the user's group; the keys in it stay 0600 root), so the
/// gateway can reload the CA and the CRL after the drop.
pub fn share_pki(dir: &Path, user: &User) -> Result<()> {
    nix::unistd::chown(dir, None, Some(user.gid))
        .with_context(|| format!("chgrp {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

/// Becomes `user` for good.
pub fn drop_to(user: &User) -> Result<()> {
    let engine_group =
        Group::from_name(ENGINE_GROUP)?.with_context(|| format!("no group {ENGINE_GROUP}"))?;
    // Empty the bounding set while still privileged, so nothing this
    // process or its children run can ever regain a capability.
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments; EINVAL past the last
        // capability the kernel knows is expected and ends the loop.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 {
            break;
        }
    }
    nix::unistd::setgroups(&[user.gid, engine_group.gid]).context("setgroups")?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid).context("setresgid")?;
    // Leaving uid 0 for good clears the permitted, effective and ambient
    // capability sets (no SECBIT_KEEP_CAPS is set).
    nix::unistd::setresuid(user.uid, user.uid, user.uid).context("setresuid")?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        bail!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        );
    }
    if Uid::effective().is_root() || Gid::effective().as_raw() == 0 {
        bail!("still root after dropping privileges");
    }
    if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        bail!("could become root again after dropping privileges");
    }
    Ok(())
}
