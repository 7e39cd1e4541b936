//! A container's cgroups on hosts with cgroup v1 controllers (legacy or
//! hybrid layout), made, joined, frozen and removed by moat itself.
//!
//! libcontainer moves its intermediate process into every v1 hierarchy by
//! writing its pid to `cgroup.procs`. That takes the kernel's global
//! threadgroup lock, and the first writer after a quiet spell waits for an
//! RCU grace period: 5 to 25 ms of every container start on the test hosts.
//! A single-threaded process that writes `0` to `tasks` moves itself
//! without that lock. So the shim's launcher joins the container's cgroups
//! that way before libcontainer forks the container's processes (which are
//! then born in them), and libcontainer is left no cgroup work to do (see
//! `shim::launch`).
//!
//! Only the controllers a container needs are used: memory (limits, the
//! OOM counter), pids, cpu and cpuacct (limits, stats), freezer (pause) and
//! devices (the device allow-list). On a host with only cgroup v2,
//! [`Hierarchies::is_empty`] is true and libcontainer keeps managing them.
//!
//! Every file is reached through a descriptor of the container's cgroup
//! directory, opened once: the shim hides the host's cgroup mounts from
//! libcontainer in its own mount namespace afterwards.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// The v1 controllers a container is put in, each for a reason above.
pub const CONTROLLERS: [&str; 6] = ["memory", "pids", "cpu", "cpuacct", "freezer", "devices"];

/// How long a freeze or a removal may take before it is an error.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("the {0} cgroup controller is not mounted (cgroup v1)")]
    Missing(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: still {state} after {SETTLE:?}")]
    Stuck { path: PathBuf, state: String },
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// Where each v1 controller is mounted; co-mounted controllers (`cpu,cpuacct`)
/// share one hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// Mount point and the controllers of ours it carries.
    mounts: Vec<(PathBuf, Vec<&'static str>)>,
}

impl Hierarchies {
    /// The hierarchies this process sees.
    pub fn current() -> Result<Hierarchies> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Hierarchies::parse(&text))
    }

    /// Reads `/proc/PID/mountinfo` text: `cgroup` (v1) mounts and their
    /// controllers, from the super options after the ` - ` separator.
    pub fn parse(mountinfo: &str) -> Hierarchies {
        let mut mounts: Vec<(PathBuf, Vec<&'static str>)> = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split_whitespace();
            let (Some("cgroup"), Some(_source), Some(options)) =
                (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let ours: Vec<&'static str> = CONTROLLERS
                .into_iter()
                .filter(|c| options.split(',').any(|o| o == *c))
                .collect();
            // A controller is mounted once; a second mount of the same
            // hierarchy (a bind elsewhere) adds nothing.
            let new: Vec<&'static str> = ours
                .into_iter()
                .filter(|c| !mounts.iter().any(|(_, cs)| cs.contains(c)))
                .collect();
            if !new.is_empty() {
                mounts.push((PathBuf::from(unescape_mountinfo(mount_point)), new));
            }
        }
        Hierarchies { mounts }
    }

    /// No v1 controller of ours is mounted: a cgroup v2-only host.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    fn has(&self, controller: &str) -> bool {
        self.mounts.iter().any(|(_, cs)| cs.contains(&controller))
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |b: u8| b - b'0';
            let value = digit(bytes[i + 1]) * 64 + digit(bytes[i + 2]) * 8 + digit(bytes[i + 3]);
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container's directory in one hierarchy.
#[derive(Debug)]
struct Dir {
    controllers: Vec<&'static str>,
    path: PathBuf,
    /// The parent cgroup, to remove this one by name.
    parent: OwnedFd,
    name: String,
    fd: OwnedFd,
}

impl Dir {
    fn file(&self, name: &str, flags: OFlag) -> Result<File> {
        let fd = nix::fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CgroupError::Io {
            path: self.path.join(name),
            source: e.into(),
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn exists(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::empty(),
        )
        .is_ok()
    }

    /// One value, in one write, as the kernel wants it.
    fn write(&self, name: &str, value: &str) -> Result<()> {
        let mut file = self.file(name, OFlag::O_WRONLY)?;
        file.write_all(value.as_bytes())
            .map_err(|source| CgroupError::Write {
                path: self.path.join(name),
                value: value.to_owned(),
                source,
            })
    }

    fn read(&self, name: &str) -> Result<String> {
        let mut text = String::new();
        self.file(name, OFlag::O_RDONLY)?
            .read_to_string(&mut text)
            .map_err(|source| CgroupError::Io {
                path: self.path.join(name),
                source,
            })?;
        Ok(text)
    }
}

/// A container's cgroup, one directory per hierarchy it uses.
#[derive(Debug)]
pub struct ContainerCgroup {
    dirs: Vec<Dir>,
}

impl ContainerCgroup {
    /// Makes `<mount>/<parent>/<id>` in each hierarchy and applies the
    /// limits (all but the pids limit: see [`ContainerCgroup::limit_pids`]).
    pub fn create(
        hierarchies: &Hierarchies,
        parent: &str,
        id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<ContainerCgroup> {
        let needs_pids = resources
            .and_then(|r| r.pids().as_ref())
            .is_some_and(|p| p.limit() > 0);
        for controller in ["memory", "devices", "freezer"] {
            if !hierarchies.has(controller) {
                return Err(CgroupError::Missing(controller));
            }
        }
        if needs_pids && !hierarchies.has("pids") {
            return Err(CgroupError::Missing("pids"));
        }
        let parent = parent.trim_matches('/');
        let mut dirs = Vec::new();
        for (mount, controllers) in &hierarchies.mounts {
            let parent_path = mount.join(parent);
            std::fs::create_dir_all(&parent_path).map_err(|source| CgroupError::Io {
                path: parent_path.clone(),
                source,
            })?;
            let path = parent_path.join(id);
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                // Left by a shim that died: reused, as its processes are gone.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(source) => return Err(CgroupError::Io { path, source }),
            }
            let open = |p: &Path| -> Result<OwnedFd> {
                let fd = nix::fcntl::open(
                    p,
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| CgroupError::Io {
                    path: p.to_owned(),
                    source: e.into(),
                })?;
                // SAFETY: open returned a new descriptor that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            };
            dirs.push(Dir {
                controllers: controllers.clone(),
                parent: open(&parent_path)?,
                fd: open(&path)?,
                name: id.to_owned(),
                path,
            });
        }
        let cgroup = ContainerCgroup { dirs };
        if let Some(resources) = resources
            && let Err(e) = cgroup.apply(resources)
        {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn dir(&self, controller: &str) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(devices) = resources.devices()
            && let Some(dir) = self.dir("devices")
        {
            for rule in devices {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                dir.write(file, &device_rule(rule))?;
            }
        }
        if let Some(memory) = resources.memory()
            && let Some(dir) = self.dir("memory")
        {
            // The cgroup is new (no limit), so the memory limit goes first:
            // memory+swap may never be below it.
            if let Some(limit) = memory.limit() {
                dir.write("memory.limit_in_bytes", &limit.to_string())?;
            }
            // Without swap accounting there is no such file; dockerd then
            // ignores the swap limit too.
            if let Some(swap) = memory.swap()
                && dir.exists("memory.memsw.limit_in_bytes")
            {
                dir.write("memory.memsw.limit_in_bytes", &swap.to_string())?;
            }
        }
        if let Some(cpu) = resources.cpu()
            && let Some(dir) = self.dir("cpu")
        {
            if let Some(shares) = cpu.shares() {
                dir.write("cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                dir.write("cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                dir.write("cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The pids limit, once the container's init process is the only one
    /// left in the cgroup (the launcher and libcontainer's intermediate
    /// process count while they live).
    pub fn limit_pids(&self, resources: Option<&LinuxResources>) -> Result<()> {
        if let Some(limit) = resources
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .filter(|l| *l > 0)
            && let Some(dir) = self.dir("pids")
        {
            dir.write("pids.max", &limit.to_string())?;
        }
        Ok(())
    }

    /// Moves the calling process into the container's cgroups. Writing `0`
    /// to `tasks` moves the calling thread only, which is the whole process
    /// when it has one thread: the caller must be single-threaded.
    pub fn enter(&self) -> Result<()> {
        for dir in &self.dirs {
            dir.write("tasks", "0")?;
        }
        Ok(())
    }

    /// Freezes or thaws every process of the container.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.dir("freezer").ok_or(CgroupError::Missing("freezer"))?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        let deadline = Instant::now() + SETTLE;
        loop {
            dir.write("freezer.state", want)?;
            let state = dir.read("freezer.state")?;
            if state.trim() == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Stuck {
                    path: dir.path.join("freezer.state"),
                    state: state.trim().to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the kernel's OOM killer acted in the container's memory cgroup.
    pub fn oom_killed(&self) -> bool {
        self.dir("memory")
            .and_then(|d| d.read("memory.oom_control").ok())
            .is_some_and(|text| oom_kill_count(&text) > 0)
    }

    /// Removes the container's cgroups, killing what is still in them.
    pub fn remove(&self) -> Result<()> {
        for dir in &self.dirs {
            let deadline = Instant::now() + SETTLE;
            loop {
                match nix::unistd::unlinkat(
                    Some(dir.parent.as_raw_fd()),
                    dir.name.as_str(),
                    UnlinkatFlags::RemoveDir,
                ) {
                    Ok(()) | Err(nix::errno::Errno::ENOENT) => break,
                    Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                        for pid in dir.read("cgroup.procs").unwrap_or_default().lines() {
                            if let Ok(pid) = pid.trim().parse::<i32>() {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        return Err(CgroupError::Io {
                            path: dir.path.clone(),
                            source: e.into(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// `a *:* rwm`, `c 1:3 rwm`: a device rule as the v1 devices controller reads it.
fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let number = |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
    format!(
        "{typ} {}:{} {}",
        number(rule.major()),
        number(rule.minor()),
        rule.access().as_deref().unwrap_or("rwm")
    )
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == "oom_kill").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
        LinuxResourcesBuilder,
    };

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_controllers_it_uses() {
        let h = Hierarchies::parse(HYBRID);
        let names: Vec<_> = h
            .mounts
            .iter()
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(names.contains(&(PathBuf::from("/sys/fs/cgroup/memory"), vec!["memory"])));
        assert!(
            !names
                .iter()
                .any(|(p, _)| p.ends_with("blkio") || p.ends_with("cpuset"))
        );
    }

    #[test]
    fn co_mounted_controllers_share_a_hierarchy() {
        let text = "\
1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /sys/fs/cgroup/net\\040x rw - cgroup cgroup rw,memory,devices,freezer
3 0 0:3 / /elsewhere rw - cgroup cgroup rw,memory
";
        let h = Hierarchies::parse(text);
        assert_eq!(
            h.mounts,
            vec![
                (
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["cpu", "cpuacct"]
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/net x"),
                    vec!["memory", "freezer", "devices"]
                ),
            ]
        );
    }

    #[test]
    fn a_v2_only_host_has_none() {
        let text = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(Hierarchies::parse(text).is_empty());
    }

    /// A fake v1 tree: one directory per controller, with the files the
    /// kernel would have.
    fn fake_tree(root: &Path, with_pids: bool) -> Hierarchies {
        let mut text = String::new();
        for (i, c) in CONTROLLERS.iter().enumerate() {
            if *c == "pids" && !with_pids {
                continue;
            }
            let dir = root.join(c);
            std::fs::create_dir_all(&dir).unwrap();
            text += &format!(
                "{i} 1 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
                dir.display()
            );
        }
        Hierarchies::parse(&text)
    }

    fn resources(pids: Option<i64>) -> LinuxResources {
        let rule = |allow, typ, major, minor| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access("rwm");
            if let Some(m) = major {
                b = b.major(m);
            }
            if let Some(m) = minor {
                b = b.minor(m);
            }
            b.build().unwrap()
        };
        let mut r = LinuxResourcesBuilder::default()
            .devices(vec![
                rule(false, LinuxDeviceType::A, None, None),
                rule(true, LinuxDeviceType::C, Some(1), Some(3)),
                rule(true, LinuxDeviceType::C, Some(136), None),
            ])
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(32 << 20)
                    .swap(64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .period(100_000u64)
                    .quota(50_000i64)
                    .build()
                    .unwrap(),
            );
        if let Some(limit) = pids {
            r = r.pids(LinuxPidsBuilder::default().limit(limit).build().unwrap());
        }
        r.build().unwrap()
    }

    /// The container's directories with the files the kernel would make in
    /// them, as plain files.
    fn kernel_files(root: &Path, id: &str) {
        for (c, files) in [
            (
                "memory",
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"][..],
            ),
            ("devices", &["devices.allow", "devices.deny"][..]),
            ("pids", &["pids.max"][..]),
            (
                "cpu",
                &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"][..],
            ),
            ("cpuacct", &[][..]),
            ("freezer", &["freezer.state"][..]),
        ] {
            let dir = root.join(c).join("moat").join(id);
            if !root.join(c).exists() {
                continue;
            }
            std::fs::create_dir_all(&dir).unwrap();
            for f in files.iter().chain(&["tasks", "cgroup.procs"]) {
                std::fs::write(dir.join(f), "").unwrap();
            }
        }
    }

    #[test]
    fn writes_limits_in_the_order_the_kernel_needs() {
        let root = tempfile::tempdir().unwrap();
        let h = fake_tree(root.path(), true);
        kernel_files(root.path(), "c1");
        let r = resources(Some(100));
        let cg = ContainerCgroup::create(&h, "/moat", "c1", Some(&r)).unwrap();
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(root.path().join(c).join("moat/c1").join(f)).unwrap()
        };
        assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        // Plain files keep the last write: the deny-all came first, then
        // each allow (the kernel appends them to the list).
        assert_eq!(read("devices", "devices.deny"), "a *:* rwm");
        assert_eq!(read("devices", "devices.allow"), "c 136:* rwm");
        assert_eq!(read("pids", "pids.max"), "");
        cg.limit_pids(Some(&r)).unwrap();
        assert_eq!(read("pids", "pids.max"), "100");
        cg.enter().unwrap();
        assert_eq!(read("freezer", "tasks"), "0");
        std::fs::write(
            root.path().join("memory/moat/c1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
    }

    #[test]
    fn a_missing_controller_it_needs_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let h = fake_tree(root.path(), false);
        let err = ContainerCgroup::create(&h, "moat", "c2", Some(&resources(Some(5)))).unwrap_err();
        assert!(matches!(err, CgroupError::Missing("pids")), "{err}");
        // No pids limit asked for: the pids controller is not needed.
        let r = resources(None);
        kernel_files(root.path(), "c3");
        ContainerCgroup::create(&h, "moat", "c3", Some(&r)).unwrap();
    }

    #[test]
    fn device_rules_read_as_the_kernel_wants() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(8i64)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&rule), "b 8:* rw");
    }

    #[test]
    fn oom_counter() {
        assert_eq!(oom_kill_count("oom_kill_disable 0\noom_kill 3\n"), 3);
        assert_eq!(oom_kill_count("low 0\nhigh 0\n"), 0);
    }
}
