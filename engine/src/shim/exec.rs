//! Running an extra process in a running container (`docker exec`).
//!
//! The process joins the container the way runc's `nsenter` does: its
//! cgroups first (while still privileged on the host; through the
//! container's cgroup handle, the cheap way, when moat manages them), then
//! the user namespace, then the others; a second fork puts it inside the PID
//! namespace. It then takes the container's confinement in the order that
//! lets each step succeed: no-new-privileges, the seccomp filter (installed
//! while the process still has CAP_SYS_ADMIN in the container's user
//! namespace), the bounding set, the ids, the capability sets, and exec.
//!
//! libcontainer 0.7's own "tenant" path does not join the user namespace
//! and drops the seccomp filter, which would run `docker exec` as host root
//! unconfined; hence this module.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use oci_spec::runtime::Spec;

use super::filter::Filter;
use super::rootfs::ProcessUser;
use crate::cgroups::ContainerCgroup;

/// The standard streams an exec'd process gets.
pub struct ExecStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The pty slave is the controlling terminal.
    pub tty: bool,
}

/// What the process runs and as whom.
pub struct ExecProcess<'a> {
    pub args: &'a [String],
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ProcessUser,
    pub privileged: bool,
}

/// Starts the process; returns its pid (a child of the shim) and the read
/// end of a pipe that carries an error message if it could not exec.
pub fn spawn(
    init_pid: Pid,
    cgroup: Option<&ContainerCgroup>,
    filter: Option<&Filter>,
    spec: &Spec,
    process: &ExecProcess<'_>,
    stdio: ExecStdio,
) -> Result<(Pid, OwnedFd), String> {
    let namespaces = namespaces_to_join(init_pid)?;
    let cgroups = match cgroup {
        Some(cgroup) => Cgroups::Moat(cgroup),
        None => Cgroups::Files(cgroup_procs_files(init_pid)?),
    };
    let args: Vec<CString> = process
        .args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} contains NUL")))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = process
        .env
        .iter()
        .map(|e| CString::new(e.as_str()).map_err(|_| format!("env {e:?} contains NUL")))
        .collect::<Result<_, _>>()?;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;

    // SAFETY: the shim is single-threaded, so the child may allocate and
    // run ordinary Rust before it execs.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(pid_w);
            drop(stdio);
            let mut pid = [0u8; 4];
            let got = File::from(pid_r).read_exact(&mut pid);
            let _ = waitpid(child, None);
            match got {
                Ok(()) => Ok((Pid::from_raw(i32::from_le_bytes(pid)), err_r)),
                Err(_) => {
                    let mut message = String::new();
                    let _ = File::from(err_r).read_to_string(&mut message);
                    Err(if message.is_empty() {
                        "exec setup failed".into()
                    } else {
                        message
                    })
                }
            }
        }
        ForkResult::Child => {
            // The joining process: host root in the container's namespaces,
            // so it only lives long enough to start the real one.
            drop(err_r);
            drop(pid_r);
            let mut report = File::from(err_w);
            if let Err(message) = join(&namespaces, &cgroups) {
                let _ = report.write_all(message.as_bytes());
                unsafe { libc::_exit(126) }
            }
            // CLONE_PARENT: the process is the shim's child, inside the PID
            // namespace, and this one can exit at once.
            // SAFETY: a fork-like clone (no new stack) of a single-threaded process.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if pid == 0 {
                drop(pid_w);
                let err = become_process(spec, filter, process, &args, &env, stdio);
                let _ = report.write_all(err.message.as_bytes());
                unsafe { libc::_exit(err.code) }
            }
            if pid < 0 {
                let _ = write!(report, "clone: {}", std::io::Error::last_os_error());
                unsafe { libc::_exit(126) }
            }
            let _ = File::from(pid_w).write_all(&(pid as i32).to_le_bytes());
            unsafe { libc::_exit(0) }
        }
    }
}

struct Failure {
    code: i32,
    message: String,
}

/// The container's namespaces that differ from the shim's, user first.
fn namespaces_to_join(init: Pid) -> Result<Vec<(File, CloneFlags)>, String> {
    let kinds = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut out = Vec::new();
    for (name, flag) in kinds {
        let theirs = format!("/proc/{init}/ns/{name}");
        let same = match (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{name}")),
        ) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            (Err(e), _) => return Err(format!("{theirs}: {e}")),
            _ => false,
        };
        if !same {
            out.push((
                File::open(&theirs).map_err(|e| format!("{theirs}: {e}"))?,
                flag,
            ));
        }
    }
    Ok(out)
}

/// How the joining process enters the container's cgroups.
enum Cgroups<'a> {
    /// moat's: the process moves itself (it is single-threaded).
    Moat(&'a ContainerCgroup),
    /// libcontainer's: the `cgroup.procs` files of the init process's cgroups.
    Files(Vec<std::path::PathBuf>),
}

/// `cgroup.procs` of every hierarchy the init process is in.
fn cgroup_procs_files(init: Pid) -> Result<Vec<std::path::PathBuf>, String> {
    let path = format!("/proc/{init}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, cgroup) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let mount = if controllers.is_empty() {
            if Path::new("/sys/fs/cgroup/unified").is_dir() {
                "/sys/fs/cgroup/unified".to_owned()
            } else {
                "/sys/fs/cgroup".to_owned()
            }
        } else {
            format!("/sys/fs/cgroup/{}", controllers.trim_start_matches("name="))
        };
        let file = Path::new(&mount)
            .join(cgroup.trim_start_matches('/'))
            .join("cgroup.procs");
        if file.exists() {
            out.push(file);
        }
    }
    Ok(out)
}

fn join(namespaces: &[(File, CloneFlags)], cgroups: &Cgroups<'_>) -> Result<(), String> {
    match cgroups {
        Cgroups::Moat(cgroup) => cgroup
            .enter()
            .map_err(|e| format!("joining the cgroups: {e}"))?,
        Cgroups::Files(files) => {
            let me = std::process::id().to_string();
            for file in files {
                std::fs::write(file, &me)
                    .map_err(|e| format!("joining {}: {e}", file.display()))?;
            }
        }
    }
    for (fd, flag) in namespaces {
        setns(fd.as_fd(), *flag).map_err(|e| format!("setns({flag:?}): {e}"))?;
    }
    Ok(())
}

fn become_process(
    spec: &Spec,
    filter: Option<&Filter>,
    process: &ExecProcess<'_>,
    args: &[CString],
    env: &[CString],
    stdio: ExecStdio,
) -> Failure {
    let fail = |code: i32, message: String| Failure { code, message };
    super::reset_signals();
    if let Err(e) = nix::unistd::setsid() {
        return fail(126, format!("setsid: {e}"));
    }
    if stdio.tty {
        // SAFETY: TIOCSCTTY on a pty slave we own; no memory is passed.
        if unsafe { libc::ioctl(stdio.stdout.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return fail(
                126,
                format!("TIOCSCTTY: {}", std::io::Error::last_os_error()),
            );
        }
    }
    for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return fail(126, format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    drop(stdio);

    let oci_process = spec.process().as_ref();
    if oci_process
        .and_then(|p| p.no_new_privileges())
        .unwrap_or(false)
    {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return fail(
                126,
                format!("no_new_privs: {}", std::io::Error::last_os_error()),
            );
        }
    }
    // The container's compiled filter, or (a notify filter) libcontainer's.
    let loaded = match (
        filter,
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
    ) {
        (Some(filter), _) => filter.install().map_err(|e| e.to_string()),
        (None, Some(seccomp)) => libcontainer::seccomp::initialize_seccomp(seccomp)
            .map(drop)
            .map_err(|e| e.to_string()),
        (None, None) => Ok(()),
    };
    if let Err(e) = loaded {
        return fail(126, format!("seccomp: {e}"));
    }

    let wanted: HashSet<caps::Capability> = if process.privileged {
        caps::all()
    } else {
        oci_process
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| {
                set.iter()
                    .filter_map(|c| crate::caps::name(*c).parse::<caps::Capability>().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for cap in caps::all() {
        if !wanted.contains(&cap)
            && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false)
            && let Err(e) = caps::drop(None, caps::CapSet::Bounding, cap)
        {
            return fail(126, format!("dropping {cap} from the bounding set: {e}"));
        }
    }
    let user = &process.user;
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        return fail(126, format!("setgroups: {e}"));
    }
    let gid = Gid::from_raw(user.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        return fail(126, format!("setgid {}: {e}", user.gid));
    }
    let uid = Uid::from_raw(user.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        return fail(126, format!("setuid {}: {e}", user.uid));
    }
    if user.uid == 0 {
        for set in [
            caps::CapSet::Inheritable,
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
        ] {
            if let Err(e) = caps::set(None, set, &wanted) {
                return fail(126, format!("capabilities: {e}"));
            }
        }
    }

    if let Err(e) = nix::unistd::chdir(process.cwd.as_str()) {
        return fail(126, format!("chdir to {}: {e}", process.cwd));
    }
    let program = match find_program(&process.args[0], &process.env) {
        Some(p) => p,
        None => {
            return fail(
                127,
                format!(
                    "exec: \"{}\": executable file not found in $PATH",
                    process.args[0]
                ),
            );
        }
    };
    let Ok(program) = CString::new(program) else {
        return fail(127, "program path contains NUL".into());
    };
    let err = nix::unistd::execve(&program, args, env).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    fail(code, format!("exec {:?}: {err}", process.args[0]))
}

/// `execvp`'s search, with the process's own `PATH`.
fn find_program(name: &str, env: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(name.to_owned());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = format!("{dir}/{name}");
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}
