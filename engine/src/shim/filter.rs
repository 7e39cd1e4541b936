//! The container's seccomp filter as a compiled BPF program, made once per
//! distinct filter and installed by the container's init just before exec.
//!
//! libcontainer builds the filter with libseccomp inside every container's
//! init process: for Docker's profile on x86_64 (three architectures, ~360
//! rules) that is 11 to 20 ms of every start on the test hosts. The program
//! is the same for every container with the same filter, so the shim
//! compiles it once, keeps it in `RUN/seccomp/<hash>.bpf` (root only, gone
//! at reboot with the kernel it was made for), and the init process loads it
//! with one `seccomp(2)` call from [`FilteredExec`], libcontainer's last step
//! before `execve`. libcontainer's copy of the spec then carries no filter.
//!
//! Without no-new-privileges (Docker's default), loading a filter needs
//! `CAP_SYS_ADMIN` in the container's user namespace; by that step
//! libcontainer has set the container's capabilities, so the shim keeps
//! `CAP_SYS_ADMIN` in the permitted set it gives libcontainer (never in the
//! bounding set, so no exec can keep it), and the executor raises it, loads
//! the filter and drops it again before `execve`. Nothing of the container
//! runs before the filter is in place.
//!
//! The spec's rules are read as libcontainer reads them: a masked-equal
//! comparison is (mask = `valueTwo`, datum = `value`), see `crate::seccomp`.
//! Filters that hand syscalls to a notify agent stay with libcontainer.

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use caps::{CapSet, Capability};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec,
};
use sha2::{Digest, Sha256};

/// Changes when the way a spec becomes a program changes, so that a cache
/// made by an older moat is not reused.
const COMPILER: &str = "moat-seccomp-1";

/// A compiled filter: `struct sock_filter` instructions as the kernel
/// takes them, and the `seccomp(2)` flags it is loaded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    program: Arc<[u8]>,
    flags: libc::c_ulong,
}

impl Filter {
    /// The compiled form of `seccomp`, from the cache in `cache_dir` or
    /// compiled and cached now; `None` for a filter that needs libcontainer
    /// (one with a notify action).
    pub fn for_spec(seccomp: &LinuxSeccomp, cache_dir: &Path) -> Result<Option<Filter>, String> {
        if libcontainer::seccomp::is_notify(seccomp) {
            return Ok(None);
        }
        let flags = load_flags(seccomp)?;
        let json = serde_json::to_vec(seccomp).map_err(|e| format!("seccomp: {e}"))?;
        let mut hash = Sha256::new();
        hash.update(COMPILER);
        hash.update([0]);
        hash.update(&json);
        let name: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let path = cache_dir.join(format!("{name}.bpf"));
        let program = match std::fs::read(&path) {
            Ok(bytes) if valid_program(&bytes) => bytes,
            _ => {
                let bytes = compile(seccomp)?;
                store(cache_dir, &path, &bytes)?;
                bytes
            }
        };
        Ok(Some(Filter {
            program: program.into(),
            flags,
        }))
    }

    /// Installs the filter on the calling thread (which needs
    /// no-new-privileges or `CAP_SYS_ADMIN` in its user namespace).
    pub fn install(&self) -> std::io::Result<()> {
        let program = libc::sock_fprog {
            len: (self.program.len() / 8) as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the program outlives the call, which only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &program as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// A program the kernel could take: whole instructions, within BPF's limit.
fn valid_program(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len().is_multiple_of(8) && bytes.len() / 8 <= 4096
}

fn load_flags(seccomp: &LinuxSeccomp) -> Result<libc::c_ulong, String> {
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err("seccomp: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a notify agent, which moat has none of".into());
            }
        };
    }
    Ok(flags)
}

/// Writes the program under a temporary name and renames it into place, so
/// a reader sees a whole program or none.
fn store(cache_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(|e| format!("{}: {e}", cache_dir.display()))?;
    let tmp: PathBuf = cache_dir.join(format!(".{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| format!("seccomp: trace value {errno}"))?,
        ),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// The spec's comparison, read as libcontainer reads it.
fn comparison(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
) -> ScmpArgCompare {
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two),
    };
    ScmpArgCompare::new(index as u32, op, value)
}

/// libseccomp's program for the spec's filter.
fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let fail = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp: {what}: {e}");
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| fail("new filter", e))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = serde_json::to_value(arch).map_err(|e| format!("seccomp: {e}"))?;
        let arch = ScmpArch::from_str(name.as_str().unwrap_or_default())
            .map_err(|e| fail("architecture", e))?;
        ctx.add_arch(arch).map_err(|e| fail("architecture", e))?;
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // A rule that does what the default does adds nothing (and
            // libseccomp refuses it).
            continue;
        }
        let args: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| comparison(a.index(), a.op(), a.value(), a.value_two().unwrap_or(0)))
            .collect();
        // libseccomp compares each argument once per rule: comparisons of
        // the same argument become rules of their own.
        let mut seen = std::collections::HashSet::new();
        let repeated = rule
            .args()
            .iter()
            .flatten()
            .any(|a| !seen.insert(a.index()));
        for name in rule.names() {
            // A name this libseccomp or kernel does not know cannot be called.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if args.is_empty() {
                ctx.add_rule(act, syscall).map(drop)
            } else if repeated {
                args.iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(drop))
            } else {
                ctx.add_rule_conditional(act, syscall, &args).map(drop)
            };
            added.map_err(|e| fail(&format!("rule for {name}"), e))?;
        }
    }
    let memfd = memfd()?;
    ctx.export_bpf(&memfd).map_err(|e| fail("export", e))?;
    let mut file = std::fs::File::from(memfd);
    let mut program = Vec::new();
    file.rewind()
        .and_then(|()| file.read_to_end(&mut program))
        .map_err(|e| format!("seccomp: reading the program: {e}"))?;
    if !valid_program(&program) {
        return Err(format!(
            "seccomp: the filter compiles to {} bytes, not a program the kernel takes",
            program.len()
        ));
    }
    Ok(program)
}

fn memfd() -> Result<OwnedFd, String> {
    // SAFETY: a NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"moat-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What libcontainer's copy of the spec must carry for [`FilteredExec`]:
/// no filter, and `CAP_SYS_ADMIN` in the permitted set when loading the
/// filter needs it. Returns the executor to give libcontainer.
pub fn hand_over(spec: &mut Spec, filter: Filter) -> FilteredExec {
    let mut exec = FilteredExec {
        filter,
        raise: false,
        drop_permitted: false,
    };
    if let Some(mut linux) = spec.linux().clone() {
        linux.set_seccomp(None);
        spec.set_linux(Some(linux));
    }
    let Some(mut process) = spec.process().clone() else {
        return exec;
    };
    if process.no_new_privileges() == Some(true) {
        return exec;
    }
    let admin = oci_spec::runtime::Capability::SysAdmin;
    let mut caps = process.capabilities().clone().unwrap_or_default();
    exec.raise = !caps
        .effective()
        .as_ref()
        .is_some_and(|e| e.contains(&admin));
    if !caps
        .permitted()
        .as_ref()
        .is_some_and(|p| p.contains(&admin))
    {
        exec.drop_permitted = true;
        let mut permitted = caps.permitted().clone().unwrap_or_default();
        permitted.insert(admin);
        caps.set_permitted(Some(permitted));
        process.set_capabilities(Some(caps));
        spec.set_process(Some(process));
    }
    exec
}

/// libcontainer's default workload (find the program in `PATH`, exec it),
/// preceded by the installation of the compiled filter.
#[derive(Clone)]
pub struct FilteredExec {
    filter: Filter,
    /// `CAP_SYS_ADMIN` is not effective: raise it for the load.
    raise: bool,
    /// `CAP_SYS_ADMIN` was permitted for the load only.
    drop_permitted: bool,
}

impl Executor for FilteredExec {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let admin = Capability::CAP_SYS_ADMIN;
        let caps_error = |what: &str, e: caps::errors::CapsError| {
            ExecutorError::Other(format!("seccomp: {what} CAP_SYS_ADMIN: {e}"))
        };
        if self.raise {
            caps::raise(None, CapSet::Effective, admin).map_err(|e| caps_error("raising", e))?;
        }
        self.filter
            .install()
            .map_err(|e| ExecutorError::Other(format!("seccomp: loading the filter: {e}")))?;
        if self.raise {
            caps::drop(None, CapSet::Effective, admin).map_err(|e| caps_error("dropping", e))?;
        }
        if self.drop_permitted {
            caps::drop(None, CapSet::Permitted, admin).map_err(|e| caps_error("dropping", e))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Where compiled filters are kept: beside the containers' run directories.
pub fn cache_dir(run_dir: &Path) -> PathBuf {
    run_dir
        .parent()
        .unwrap_or(Path::new("/run/moat"))
        .join("seccomp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_default() -> LinuxSeccomp {
        crate::seccomp::docker_default(&crate::caps::DOCKER_DEFAULT.into_iter().collect())
    }

    /// The spec of a default container (`docker run busybox true`).
    fn default_spec() -> Spec {
        let dir = Path::new("/tmp");
        let config = moat_api::container::ContainerConfig {
            cmd: vec!["true".into()],
            ..Default::default()
        };
        crate::spec::build(
            &config,
            &crate::spec::SpecContext {
                id: "0123456789abcdef",
                dir,
                rootfs: dir,
                id_map: crate::userns::IdMap {
                    uid: 100_000,
                    gid: 100_000,
                    size: 65536,
                },
                volumes: dir,
                cgroup_parent: "/moat",
            },
        )
        .unwrap()
    }

    #[test]
    fn compiles_once_and_reads_the_cache_after() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let first = Filter::for_spec(&docker_default(), &cache)
            .unwrap()
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A cached program is used as it is.
        let path = files[0].path();
        let again = Filter::for_spec(&docker_default(), &cache)
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        // A damaged one is made again.
        std::fs::write(&path, b"short").unwrap();
        let remade = Filter::for_spec(&docker_default(), &cache)
            .unwrap()
            .unwrap();
        assert_eq!(first, remade);
    }

    #[test]
    fn the_program_does_what_the_profile_says() {
        let dir = tempfile::tempdir().unwrap();
        let filter = Filter::for_spec(&docker_default(), dir.path())
            .unwrap()
            .unwrap();
        // In a child: no-new-privileges lets an unprivileged process load it.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    // SAFETY: prctl and raw syscalls with integer arguments.
                    unsafe {
                        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                            return 10;
                        }
                        if filter.install().is_err() {
                            return 11;
                        }
                        let errno = || std::io::Error::last_os_error().raw_os_error();
                        if libc::getppid() <= 0 {
                            return 12;
                        }
                        // Namespaces need CAP_SYS_ADMIN, which Docker's set lacks.
                        if libc::unshare(libc::CLONE_NEWUSER) == 0 || errno() != Some(libc::EPERM) {
                            return 13;
                        }
                        // clone3 answers ENOSYS, so that libc falls back to clone.
                        if libc::syscall(libc::SYS_clone3, 0usize, 0usize) == 0
                            || errno() != Some(libc::ENOSYS)
                        {
                            return 14;
                        }
                        // personality: only the listed values.
                        if libc::personality(0xffff_ffff) < 0 {
                            return 15;
                        }
                        if libc::personality(0x0040_0000) >= 0 || errno() != Some(libc::EPERM) {
                            return 16;
                        }
                        if libc::syscall(libc::SYS_keyctl, 0usize) == 0
                            || errno() != Some(libc::EPERM)
                        {
                            return 17;
                        }
                    }
                    0
                })();
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "a probe failed (exit code = which)"
                );
            }
        }
    }

    #[test]
    fn libcontainer_is_given_no_filter_and_the_means_to_load_one() {
        let dir = tempfile::tempdir().unwrap();
        let filter = Filter::for_spec(&docker_default(), dir.path())
            .unwrap()
            .unwrap();
        let mut spec = default_spec();
        let exec = hand_over(&mut spec, filter);
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let admin = oci_spec::runtime::Capability::SysAdmin;
        assert!(caps.permitted().as_ref().unwrap().contains(&admin));
        assert!(!caps.bounding().as_ref().unwrap().contains(&admin));
        assert!(!caps.effective().as_ref().unwrap().contains(&admin));
        assert!(exec.raise && exec.drop_permitted);
    }
}
