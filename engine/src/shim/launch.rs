//! Creating the container: its cgroups, then libcontainer's create, run
//! from a launcher process that is already in those cgroups.
//!
//! On a host with v1 controllers moat makes the container's cgroups itself
//! ([`crate::cgroups`]) and a child of the shim, the launcher, joins them
//! the cheap way (its own thread, through `tasks`) before it calls
//! libcontainer, so the container's processes are born in them. The shim
//! never enters them (its memory is not the container's, and a paused
//! container does not freeze its shim). The shim is a child subreaper: when
//! the launcher exits, the container's init process becomes the shim's
//! child, as it would be had the shim created it.
//!
//! libcontainer must then find no cgroup work, or it would move its
//! processes again the expensive way: in the shim's private mount namespace
//! the host's cgroup mounts are replaced with an empty tmpfs, and
//! libcontainer's copy of the spec carries no resources. The container does
//! not see that tmpfs (its /sys is its own), and neither does the host; the
//! shim keeps descriptors of the container's cgroup directories.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::init_builder::InitContainerBuilder;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use oci_spec::runtime::Spec;

use crate::cgroups::{ContainerCgroup, Hierarchies};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Makes the container's cgroups when moat manages them (a host with v1
/// controllers), with every limit but the pids one; `None` on a cgroup
/// v2-only host, where libcontainer does.
pub fn prepare_cgroups(spec: &Spec, id: &str) -> Result<Option<ContainerCgroup>, String> {
    let hierarchies = Hierarchies::current().map_err(|e| e.to_string())?;
    if hierarchies.is_empty() {
        return Ok(None);
    }
    let linux = spec.linux().as_ref();
    let path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .ok_or("the spec has no cgroups path")?;
    // The spec's path is PARENT/ID; the parent is kept, the id is the container's.
    let parent = path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = ContainerCgroup::create(
        &hierarchies,
        &parent,
        id,
        linux.and_then(|l| l.resources().as_ref()),
    )
    .map_err(|e| format!("cgroups: {e}"))?;
    if let Err(e) = hide_cgroup_mounts() {
        let _ = cgroup.remove();
        return Err(e);
    }
    Ok(Some(cgroup))
}

/// In the shim's private mount namespace only: the host's cgroup mounts
/// go (covering them is not enough, libcontainer reads mountinfo), and an
/// empty read-only tmpfs takes their place, where libcontainer expects a
/// v1 layout and finds no controller.
fn hide_cgroup_mounts() -> Result<(), String> {
    umount2(CGROUP_ROOT, MntFlags::MNT_DETACH)
        .map_err(|e| format!("unmounting {CGROUP_ROOT} in the shim's mount namespace: {e}"))?;
    mount(
        Some("tmpfs"),
        CGROUP_ROOT,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs at {CGROUP_ROOT} in the shim's mount namespace: {e}"))
}

/// Writes libcontainer's copy of the spec in `bundle` (the run directory, a
/// tmpfs): without the resources when moat applies them itself.
pub fn write_bundle(spec: &Spec, bundle: &Path, moat_cgroups: bool) -> Result<(), String> {
    let mut spec = spec.clone();
    if moat_cgroups && let Some(mut linux) = spec.linux().clone() {
        linux.set_resources(None);
        spec.set_linux(Some(linux));
    }
    let path = bundle.join("config.json");
    spec.save(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs libcontainer's create in a launcher process that has joined the
/// container's cgroups, and loads the created container back from its
/// state in `container_root` (libcontainer's root joined with the id).
/// The shim must be single-threaded, so the launcher is too.
pub fn launch(
    builder: InitContainerBuilder,
    cgroup: Option<&ContainerCgroup>,
    container_root: &Path,
) -> Result<Container, String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "becoming a child subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded; the child runs ordinary Rust and
    // leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(report_r);
            let mut report = File::from(report_w);
            // The container's processes inherit signal dispositions and
            // the mask from the process that forks them: the defaults.
            super::reset_signals();
            let result = (|| {
                if let Some(cgroup) = cgroup {
                    cgroup
                        .enter()
                        .map_err(|e| format!("joining the cgroups: {e}"))?;
                }
                let container = builder
                    .build()
                    .map_err(|e| super::describe_libcontainer_error(&e.to_string()))?;
                container
                    .pid()
                    .ok_or_else(|| "libcontainer reported no init pid".to_owned())
            })();
            let (line, code) = match result {
                Ok(pid) => (format!("ok {pid}\n"), 0),
                Err(message) => (format!("error {}\n", message.replace('\n', " ")), 1),
            };
            let _ = report.write_all(line.as_bytes());
            // SAFETY: ends the launcher without running the shim's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            // The launcher's copies of the container's stdio go with it.
            drop(builder);
            let mut line = String::new();
            let _ = BufReader::new(File::from(report_r)).read_line(&mut line);
            let _ = waitpid(child, None);
            match line.trim_end().split_once(' ') {
                Some(("ok", _)) => Container::load(container_root.to_path_buf())
                    .map_err(|e| format!("loading the created container: {e}")),
                Some(("error", message)) => Err(message.to_owned()),
                _ => Err("the launcher exited before creating the container".into()),
            }
        }
    }
}
