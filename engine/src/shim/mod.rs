//! The shim: one small, single-threaded process per running container.
//!
//! libcontainer clones with a raw `clone3`, which is not safe from a
//! multi-threaded process such as the engine, so the engine re-executes its
//! own binary as `moat shim` for each container start. The shim
//!
//! - leaves the host's mount namespace and mounts the container's root
//!   filesystem in its own (so no mount outlives it),
//! - creates the container with libcontainer, owning its stdio (pipes, or a
//!   pty when the container has a TTY),
//! - writes the container's output to its json-file log and to attached
//!   clients,
//! - answers the engine on a control socket (start, kill, wait, exec, ...),
//! - reaps the init process and records its exit code, finish time and
//!   whether the OOM killer ended it, atomically, before it exits.
//!
//! It detaches from the engine (a new session, re-parented away), so the
//! engine can be killed, restarted or upgraded while containers run; a new
//! engine finds the shim again through its sockets and state files.

pub mod archive;
pub mod exec;
mod filter;
mod launch;
pub mod protocol;
pub mod rootfs;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cgroups::ContainerCgroup;
use crate::fsutil;
use crate::logs::{LogWriter, Rotation, Stream};
use filter::Filter;
use protocol::{
    AttachHeader, ExecExit, ExecRequest, ExitStatus, Request, Response, STDERR, STDOUT, ShimState,
    Status, frame,
};
use rootfs::Layers;

/// Files in the container's state directory.
pub const SHIM_CONFIG: &str = "shim-config.json";
pub const OCI_SPEC: &str = "config.json";
pub const SHIM_STATE: &str = "shim.json";
pub const EXIT_STATUS: &str = "exit.json";
pub const LOG_FILE: &str = "container.log";
pub const EXEC_DIR: &str = "execs";
/// Sockets in the container's run directory.
pub const CONTROL_SOCKET: &str = "control.sock";
pub const ATTACH_SOCKET: &str = "attach.sock";
const CONSOLE_SOCKET: &str = "console.sock";
const LIBCONTAINER_ROOT: &str = "lc";

/// How long output may still arrive after the init process has exited
/// (a process that left the container's PID namespace may hold a pipe).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// shim.json is synced once the shim has been idle this long, or this long
/// after it was written if the shim never is.
const SYNC_IDLE_MS: u16 = 10;
const SYNC_WITHIN: Duration = Duration::from_millis(100);
/// An attached client this far behind is dropped rather than stalling the container.
const MAX_CLIENT_BACKLOG: usize = 4 << 20;

/// What the engine tells the shim, in `shim-config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    /// Docker's `User`, resolved by the shim once the rootfs is mounted.
    pub user: String,
    pub layers: Layers,
    pub rootfs: PathBuf,
    pub run_dir: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

/// The state directory argument of a shim started ahead of time: it reads
/// the real one from stdin (and exits quietly at end-of-file).
pub const SPARE: &str = "-";

/// `moat shim STATE_DIR`: forks the shim proper, waits until it has created
/// the container (or failed to), reports that on stdout, and exits.
pub fn main(state_dir: &Path) -> i32 {
    let given;
    let state_dir = if state_dir == Path::new(SPARE) {
        let mut line = Vec::new();
        match std::io::BufRead::read_until(&mut std::io::stdin().lock(), b'\n', &mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        given = PathBuf::from(std::ffi::OsString::from(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&line),
        ));
        given.as_path()
    } else {
        state_dir
    };
    let (ready_r, ready_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shim: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: `moat shim` is a fresh single-threaded process.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("shim: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            // One line, not EOF: the container's init process holds a copy
            // of the pipe until it execs, which is only after `Start`.
            let mut report = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(File::from(ready_r)),
                &mut report,
            );
            match report.strip_prefix("ok ") {
                Some(pid) => {
                    println!("{}", pid.trim());
                    0
                }
                None if report.is_empty() => {
                    eprintln!("shim exited before creating the container");
                    1
                }
                None => {
                    eprintln!("{}", report.trim_start_matches("error ").trim());
                    1
                }
            }
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            let mut ready = File::from(ready_w);
            detach(state_dir);
            match Shim::create(state_dir) {
                Ok(mut shim) => {
                    let _ = writeln!(ready, "ok {}", shim.init);
                    drop(ready);
                    shim.run();
                    0
                }
                Err(message) => {
                    record_failure(state_dir, &message);
                    let _ = writeln!(ready, "error {}", message.replace('\n', " "));
                    1
                }
            }
        }
    }
}

/// A new session with no terminal, stdio on /dev/null, stderr on `shim.log`.
fn detach(state_dir: &Path) {
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    if let Ok(log) = File::options()
        .create(true)
        .append(true)
        .open(state_dir.join("shim.log"))
    {
        let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    }
    // libcontainer explains its failures through tracing; they go to shim.log.
    // When moat manages the cgroups, libcontainer's cgroup manager finds
    // none and warns once per controller: only its errors are kept.
    use tracing_subscriber::layer::SubscriberExt;
    let debug = std::env::var_os("MOAT_SHIM_DEBUG").is_some();
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    let cgroups_level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::ERROR
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .finish()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_default(level)
                .with_target("libcgroups", cgroups_level),
        );
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// A container that could not be created ends as Docker reports it:
/// exit code 127 when the command is missing, 126 otherwise.
fn record_failure(state_dir: &Path, message: &str) {
    let code = if message.contains("not found") || message.contains("No such file") {
        127
    } else {
        126
    };
    let status = ExitStatus {
        exit_code: code,
        finished_at: OffsetDateTime::now_utc(),
        oom_killed: false,
        error: message.to_owned(),
    };
    let _ = fsutil::write_json(&state_dir.join(EXIT_STATUS), &status);
}

/// A connection receiving the container's (or an exec's) output.
struct Client {
    stream: UnixStream,
    header: AttachHeader,
    backlog: Vec<u8>,
    /// The client has stopped sending (its stdin is done).
    input_closed: bool,
    /// Gone or too far behind; swept out after the current round of events
    /// (removing it at once would shift the indices the round refers to).
    dead: bool,
}

impl Client {
    fn new(stream: UnixStream, header: AttachHeader) -> std::io::Result<Client> {
        stream.set_nonblocking(true)?;
        Ok(Client {
            stream,
            header,
            backlog: Vec::new(),
            input_closed: false,
            dead: false,
        })
    }

    /// Readable while it may still send; writable while output waits.
    fn poll_flags(&self) -> PollFlags {
        let mut flags = if self.input_closed {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        if !self.backlog.is_empty() {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    /// Queues output; false when the client is too far behind to keep.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.backlog.is_empty() {
            match self.stream.write(bytes) {
                Ok(n) => self.backlog.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.backlog.extend_from_slice(bytes)
                }
                Err(_) => return false,
            }
        } else {
            self.backlog.extend_from_slice(bytes);
        }
        self.backlog.len() <= MAX_CLIENT_BACKLOG
    }

    /// Writes what it can of the backlog; false when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.backlog.is_empty() {
            match self.stream.write(&self.backlog) {
                Ok(0) => return false,
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Last chance to deliver the backlog before closing, bounded in time.
    fn finish(mut self) {
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = self.stream.write_all(&self.backlog);
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// An exec'd process and its one client.
struct Exec {
    id: String,
    pid: Pid,
    tty: bool,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdin_backlog: Vec<u8>,
    error_pipe: Option<OwnedFd>,
    error: String,
    exit_code: Option<i32>,
    client: Option<Client>,
    /// Finished and reported; swept out after the current round of events.
    done: bool,
}

/// What a poll slot stands for.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Signals,
    Control,
    Attach,
    Output(u8),
    Stdin,
    Client(usize),
    ExecOutput(usize, u8),
    ExecStdin(usize),
    ExecError(usize),
    ExecClient(usize),
}

struct Shim {
    state_dir: PathBuf,
    config: ShimConfig,
    spec: Spec,
    container: Container,
    /// The container's cgroups when moat manages them (v1 controllers);
    /// `None` when libcontainer does (a cgroup v2-only host).
    cgroup: Option<ContainerCgroup>,
    /// The compiled seccomp filter, for execs; `None` when the container
    /// has none or libcontainer loads it (a notify filter).
    filter: Option<Filter>,
    init: Pid,
    started_at: OffsetDateTime,
    status: Status,
    log: LogWriter,
    /// stdout, or the pty master with a TTY.
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// The container's stdin (the pty master again with a TTY).
    stdin: Option<OwnedFd>,
    stdin_backlog: Vec<u8>,
    control: UnixListener,
    attach: UnixListener,
    signals: SignalFd,
    clients: Vec<Client>,
    waiters: Vec<UnixStream>,
    execs: Vec<Exec>,
    exit: Option<(i32, Instant)>,
    /// Since when shim.json has been written but not synced.
    state_unsynced: std::cell::Cell<Option<Instant>>,
}

/// What libcontainer's create leaves the shim.
struct Created {
    container: Container,
    /// stdout, or the pty master with a TTY.
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// The container's stdin (the pty master again with a TTY).
    stdin: Option<OwnedFd>,
    filter: Option<Filter>,
}

impl Shim {
    /// Everything up to a created (not yet started) container.
    fn create(state_dir: &Path) -> Result<Shim, String> {
        let config: ShimConfig = fsutil::read_json(&state_dir.join(SHIM_CONFIG))
            .map_err(|e| format!("{}: {e}", state_dir.join(SHIM_CONFIG).display()))?;
        let spec_path = state_dir.join(OCI_SPEC);
        let mut spec =
            Spec::load(&spec_path).map_err(|e| format!("{}: {e}", spec_path.display()))?;

        rootfs::private_mount_namespace()?;
        rootfs::mount_layers(&config.layers, &config.rootfs)?;
        let user = rootfs::resolve_user(&config.rootfs, &config.user)?;
        set_process_user(&mut spec, &user);

        // The shim's own, before there is a container to clean up after:
        // SIGCHLD arrives on a descriptor the loop polls, the signals that
        // would end a daemon are ignored (the launcher puts every signal
        // back to its default for the container's processes), the sockets
        // and the log.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        for sig in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGPIPE,
        ] {
            // SAFETY: SIG_IGN installs no handler code.
            unsafe {
                let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
            }
        }
        fs::create_dir_all(&config.run_dir)
            .map_err(|e| format!("{}: {e}", config.run_dir.display()))?;
        let control = bind(&config.run_dir.join(CONTROL_SOCKET))?;
        let attach = bind(&config.run_dir.join(ATTACH_SOCKET))?;
        let rotation = Rotation {
            max_size: config.log_max_size,
            max_file: config.log_max_files,
        };
        let log = LogWriter::open(state_dir.join(LOG_FILE), rotation).map_err(|e| e.to_string())?;

        let cgroup = launch::prepare_cgroups(&spec, &config.id)?;
        let Created {
            container,
            out,
            err,
            stdin,
            filter,
        } = match Shim::create_container(&config, &spec, cgroup.as_ref()) {
            Ok(created) => created,
            Err(e) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                // No container: none of its sockets either.
                let _ = fs::remove_dir_all(&config.run_dir);
                return Err(e);
            }
        };
        for fd in [&out, &err, &stdin].into_iter().flatten() {
            set_nonblocking(fd.as_raw_fd());
        }
        let _ = fs::remove_file(state_dir.join(EXIT_STATUS));
        let init = container.pid().ok_or("libcontainer reported no init pid")?;
        let mut shim = Shim {
            state_dir: state_dir.to_path_buf(),
            config,
            spec,
            container,
            cgroup,
            filter,
            init,
            started_at: OffsetDateTime::now_utc(),
            status: Status::Created,
            log,
            out,
            err,
            stdin,
            stdin_backlog: Vec::new(),
            control,
            attach,
            signals,
            clients: Vec::new(),
            waiters: Vec::new(),
            execs: Vec::new(),
            exit: None,
            state_unsynced: std::cell::Cell::new(None),
        };
        if let Err(e) = shim.save_state() {
            abandon(&mut shim.container, Some(init), shim.cgroup.as_ref());
            let _ = fs::remove_dir_all(&shim.config.run_dir);
            return Err(e);
        }
        Ok(shim)
    }

    /// libcontainer's create, through the launcher.
    fn create_container(
        config: &ShimConfig,
        spec: &Spec,
        cgroup: Option<&ContainerCgroup>,
    ) -> Result<Created, String> {
        // libcontainer's copy of the spec: the compiled seccomp filter
        // replaces libcontainer's own, and the cgroups are moat's.
        let mut lc_spec = spec.clone();
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let filter = match seccomp {
            Some(seccomp) => Filter::for_spec(seccomp, &filter::cache_dir(&config.run_dir))?,
            None => None,
        };
        let executor = filter.clone().map(|f| filter::hand_over(&mut lc_spec, f));
        launch::write_bundle(&lc_spec, &config.run_dir, cgroup.is_some())?;
        let lc_root = config.run_dir.join(LIBCONTAINER_ROOT);
        let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
            .with_root_path(&lc_root)
            .map_err(|e| format!("libcontainer root: {e}"))?;
        if let Some(executor) = executor {
            builder = builder.with_executor(executor);
        }
        let (mut out, mut err, mut stdin) = (None, None, None);
        let console = config.run_dir.join(CONSOLE_SOCKET);
        let console_listener = if config.tty {
            let _ = fs::remove_file(&console);
            builder = builder.with_console_socket(Some(&console));
            Some(UnixListener::bind(&console).map_err(|e| format!("{}: {e}", console.display()))?)
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdin_r: OwnedFd = if config.open_stdin {
                let (r, w) = pipe()?;
                stdin = Some(w);
                r
            } else {
                File::open("/dev/null")
                    .map_err(|e| format!("/dev/null: {e}"))?
                    .into()
            };
            out = Some(out_r);
            err = Some(err_r);
            builder = builder
                .with_stdin(stdin_r)
                .with_stdout(out_w)
                .with_stderr(err_w);
            None
        };
        let builder = builder
            .validate_id()
            .map_err(|e| format!("container id: {e}"))?
            .as_init(&config.run_dir)
            .with_systemd(false)
            .with_detach(true);
        let mut container = launch::launch(builder, cgroup, &lc_root.join(&config.id))?;
        let init = container.pid();
        let ready = (|| {
            if let Some(listener) = console_listener {
                let master = receive_pty_master(&listener)?;
                let _ = fs::remove_file(&console);
                stdin = Some(master.try_clone().map_err(|e| format!("dup: {e}"))?);
                out = Some(master);
            }
            if let Some(cgroup) = cgroup {
                let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
                cgroup
                    .limit_pids(resources)
                    .map_err(|e| format!("cgroups: {e}"))?;
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = ready {
            abandon(&mut container, init, None);
            return Err(e);
        }
        Ok(Created {
            container,
            out,
            err,
            stdin,
            filter,
        })
    }

    /// shim.json, replaced atomically; made durable by [`Shim::sync_state`]
    /// once the shim is idle, so no answer waits on the disk.
    fn save_state(&self) -> Result<(), String> {
        let state = ShimState {
            status: self.status,
            shim_pid: std::process::id() as i32,
            pid: self.init.as_raw(),
            started_at: self.started_at,
        };
        fsutil::write_json_unsynced(&self.state_dir.join(SHIM_STATE), &state)
            .map_err(|e| e.to_string())?;
        if self.state_unsynced.get().is_none() {
            self.state_unsynced.set(Some(Instant::now()));
        }
        Ok(())
    }

    fn sync_state(&self) {
        if self.state_unsynced.take().is_some()
            && let Err(e) = fsutil::sync(&self.state_dir.join(SHIM_STATE))
            && e.kind() != ErrorKind::NotFound
        {
            eprintln!("shim: syncing its state: {e}");
        }
    }

    /// The event loop, until the container has exited and its output is drained.
    fn run(&mut self) {
        loop {
            if let Some((_, at)) = self.exit {
                let drained = self.out.is_none() && self.err.is_none();
                if drained || at.elapsed() > DRAIN_AFTER_EXIT {
                    break;
                }
            }
            let (slots, events) = self.poll_once();
            if events.iter().all(|e| e.is_empty()) {
                // A child that exited before SIGCHLD was routed to the
                // signal descriptor sent no event: look anyway.
                self.reap();
            }
            let idle = events.iter().all(|e| e.is_empty());
            for (slot, revents) in slots.into_iter().zip(events) {
                if revents.is_empty() {
                    continue;
                }
                self.handle(slot, revents);
            }
            self.clients.retain_mut(|c| !c.dead && c.flush());
            self.execs.retain(|e| !e.done);
            if let Some(since) = self.state_unsynced.get()
                && (idle || since.elapsed() > SYNC_WITHIN)
            {
                self.sync_state();
            }
        }
        self.finish();
    }

    fn poll_once(&self) -> (Vec<Slot>, Vec<PollFlags>) {
        let input = PollFlags::POLLIN;
        let mut slots = vec![Slot::Signals, Slot::Control, Slot::Attach];
        let mut fds: Vec<PollFd<'_>> = vec![
            PollFd::new(self.signals.as_fd(), input),
            PollFd::new(self.control.as_fd(), input),
            PollFd::new(self.attach.as_fd(), input),
        ];
        for (fd, stream) in [(&self.out, STDOUT), (&self.err, STDERR)] {
            if let Some(fd) = fd {
                slots.push(Slot::Output(stream));
                fds.push(PollFd::new(fd.as_fd(), input));
            }
        }
        if let (Some(fd), false) = (&self.stdin, self.stdin_backlog.is_empty()) {
            slots.push(Slot::Stdin);
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
        }
        for (i, c) in self.clients.iter().enumerate() {
            slots.push(Slot::Client(i));
            fds.push(PollFd::new(c.stream.as_fd(), c.poll_flags()));
        }
        for (i, e) in self.execs.iter().enumerate() {
            for (fd, stream) in [(&e.out, STDOUT), (&e.err, STDERR)] {
                if let Some(fd) = fd {
                    slots.push(Slot::ExecOutput(i, stream));
                    fds.push(PollFd::new(fd.as_fd(), input));
                }
            }
            if let (Some(fd), false) = (&e.stdin, e.stdin_backlog.is_empty()) {
                slots.push(Slot::ExecStdin(i));
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(fd) = &e.error_pipe {
                slots.push(Slot::ExecError(i));
                fds.push(PollFd::new(fd.as_fd(), input));
            }
            if let Some(c) = &e.client {
                slots.push(Slot::ExecClient(i));
                fds.push(PollFd::new(c.stream.as_fd(), c.poll_flags()));
            }
        }
        let timeout = if self.state_unsynced.get().is_some() {
            SYNC_IDLE_MS
        } else if self.exit.is_some() {
            100
        } else {
            1000
        };
        match poll(&mut fds, PollTimeout::from(timeout)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("shim: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let events = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        (slots, events)
    }

    fn handle(&mut self, slot: Slot, revents: PollFlags) {
        match slot {
            Slot::Signals => self.reap(),
            Slot::Control => {
                if let Ok((stream, _)) = self.control.accept() {
                    self.control_request(stream);
                }
            }
            Slot::Attach => {
                if let Ok((stream, _)) = self.attach.accept() {
                    self.attach_client(stream);
                }
            }
            Slot::Output(stream) => self.container_output(stream),
            Slot::Stdin => {
                if let Some(fd) = &self.stdin
                    && !write_backlog(fd.as_raw_fd(), &mut self.stdin_backlog)
                {
                    self.stdin = None;
                }
            }
            Slot::Client(i) => {
                if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.client_input(i);
                }
            }
            Slot::ExecOutput(i, stream) => self.exec_output(i, stream),
            Slot::ExecStdin(i) => {
                let Some(e) = self.execs.get_mut(i).filter(|e| !e.done) else {
                    return;
                };
                if let Some(fd) = &e.stdin
                    && !write_backlog(fd.as_raw_fd(), &mut e.stdin_backlog)
                {
                    e.stdin = None;
                }
            }
            Slot::ExecError(i) => {
                let Some(e) = self.execs.get_mut(i).filter(|e| !e.done) else {
                    return;
                };
                if let Some(fd) = e.error_pipe.take() {
                    let mut text = String::new();
                    let _ = File::from(fd).read_to_string(&mut text);
                    e.error = text;
                }
                self.finish_exec_if_done(i);
            }
            Slot::ExecClient(i) => self.exec_client_input(i),
        }
    }

    fn control_request(&mut self, mut stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request: Request = match read_json_line(&mut stream) {
            Ok(r) => r,
            Err(e) => {
                reply(&mut stream, &Response::Error { message: e });
                return;
            }
        };
        let response = match request {
            Request::Start => self.start(),
            Request::Kill { signal } => self.kill(signal),
            Request::Wait => {
                if let Some(status) = self.exit_status() {
                    Response::Exited(status)
                } else {
                    self.waiters.push(stream);
                    return;
                }
            }
            Request::State => Response::State(ShimState {
                status: self.status,
                shim_pid: std::process::id() as i32,
                pid: self.init.as_raw(),
                started_at: self.started_at,
            }),
            Request::Resize { height, width } => match &self.out {
                Some(fd) if self.config.tty => resize(fd.as_raw_fd(), height, width),
                _ => Response::Error {
                    message: "the container has no TTY".into(),
                },
            },
            Request::Pause => self.pause(true),
            Request::Resume => self.pause(false),
            Request::Exec(exec) => {
                if let Err(message) = self.start_exec(exec, stream.try_clone()) {
                    reply(&mut stream, &Response::Error { message });
                }
                return;
            }
            Request::ExecResize { id, height, width } => {
                match self.execs.iter().find(|e| e.id == id && e.tty) {
                    Some(e) => match &e.out {
                        Some(fd) => resize(fd.as_raw_fd(), height, width),
                        None => Response::Ok,
                    },
                    None => Response::Error {
                        message: format!("no running exec {id} with a TTY"),
                    },
                }
            }
        };
        reply(&mut stream, &response);
    }

    fn start(&mut self) -> Response {
        if self.status != Status::Created {
            return Response::Error {
                message: "the container is already started".into(),
            };
        }
        match self.container.start() {
            Ok(()) => {
                self.status = Status::Running;
                self.started_at = OffsetDateTime::now_utc();
                match self.save_state() {
                    Ok(()) => Response::Ok,
                    Err(message) => Response::Error { message },
                }
            }
            Err(e) => Response::Error {
                message: describe_libcontainer_error(&e.to_string()),
            },
        }
    }

    fn kill(&mut self, signal: i32) -> Response {
        if self.exit.is_some() {
            return Response::Error {
                message: "the container is not running".into(),
            };
        }
        let signal = match Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => {
                return Response::Error {
                    message: format!("invalid signal {signal}"),
                };
            }
        };
        // A paused container must be thawed to act on its signals.
        if self.status == Status::Paused && matches!(signal, Signal::SIGKILL | Signal::SIGTERM) {
            let _ = self.set_paused(false);
            self.status = Status::Running;
        }
        match nix::sys::signal::kill(self.init, signal) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error {
                message: format!("kill: {e}"),
            },
        }
    }

    /// Freezes or thaws the container: through its cgroup when moat
    /// manages it, through libcontainer otherwise.
    fn set_paused(&mut self, pause: bool) -> Result<(), String> {
        match (&self.cgroup, pause) {
            (Some(cgroup), _) => cgroup.set_frozen(pause).map_err(|e| e.to_string()),
            (None, true) => self.container.pause().map_err(|e| e.to_string()),
            (None, false) => self.container.resume().map_err(|e| e.to_string()),
        }
    }

    fn pause(&mut self, pause: bool) -> Response {
        match self.set_paused(pause) {
            Ok(()) => {
                self.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
                let _ = self.save_state();
                Response::Ok
            }
            Err(message) => Response::Error { message },
        }
    }

    fn attach_client(&mut self, mut stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let header: AttachHeader = match read_json_line(&mut stream) {
            Ok(h) => h,
            Err(_) => return,
        };
        let _ = stream.set_read_timeout(None);
        if let Ok(client) = Client::new(stream, header) {
            self.clients.push(client);
        }
    }

    /// Reads what the container wrote; logs it and sends it to clients.
    fn container_output(&mut self, stream: u8) {
        let fd = if stream == STDOUT {
            &self.out
        } else {
            &self.err
        };
        let Some(raw) = fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        match read_fd(raw, &mut buf) {
            ReadResult::Data(n) => {
                let data = &buf[..n];
                let log_stream = if stream == STDOUT {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                if let Err(e) = self.log.write(log_stream, data) {
                    eprintln!("shim: log: {e}");
                }
                let tty = self.config.tty;
                let framed = if tty {
                    data.to_vec()
                } else {
                    frame(stream, data)
                };
                for c in self.clients.iter_mut().filter(|c| !c.dead) {
                    let wants = if stream == STDOUT {
                        c.header.stdout
                    } else {
                        c.header.stderr
                    };
                    if wants && !c.send(&framed) {
                        c.dead = true;
                    }
                }
            }
            ReadResult::Again => {}
            ReadResult::Closed => {
                if stream == STDOUT {
                    self.out = None;
                } else {
                    self.err = None;
                }
            }
        }
    }

    /// Bytes from an attached client go to the container's stdin.
    fn client_input(&mut self, i: usize) {
        let mut buf = [0u8; 32 * 1024];
        let Some(client) = self.clients.get_mut(i).filter(|c| !c.dead) else {
            return;
        };
        match client.stream.read(&mut buf) {
            Ok(0) => {
                client.input_closed = true;
                if client.header.stdin && self.config.stdin_once && !self.config.tty {
                    self.close_stdin_when_flushed();
                }
            }
            Ok(n) if client.header.stdin => {
                if self.stdin.is_some() {
                    self.stdin_backlog.extend_from_slice(&buf[..n]);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                client.input_closed = true;
                client.dead = true;
            }
        }
    }

    fn close_stdin_when_flushed(&mut self) {
        if let Some(fd) = &self.stdin {
            let _ = write_backlog(fd.as_raw_fd(), &mut self.stdin_backlog);
        }
        self.stdin = None;
        self.stdin_backlog.clear();
    }

    fn start_exec(
        &mut self,
        request: ExecRequest,
        stream: std::io::Result<UnixStream>,
    ) -> Result<(), String> {
        let mut stream = stream.map_err(|e| e.to_string())?;
        if self.status != Status::Running || self.exit.is_some() {
            return Err(format!("container {} is not running", self.config.id));
        }
        if request.args.is_empty() {
            return Err("no command given to exec".into());
        }
        if self.execs.iter().any(|e| e.id == request.id) {
            return Err(format!("exec {} is already running", request.id));
        }
        let root = PathBuf::from(format!("/proc/{}/root", self.init));
        let user_name = if request.user.is_empty() {
            &self.config.user
        } else {
            &request.user
        };
        let user = rootfs::resolve_user(&root, user_name)?;
        let process = self.spec.process().as_ref();
        let mut env: Vec<String> = process.and_then(|p| p.env().clone()).unwrap_or_default();
        for var in &request.env {
            let name = var.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(var.clone());
        }
        let cwd = if request.working_dir.is_empty() {
            process
                .map(|p| p.cwd().display().to_string())
                .unwrap_or_else(|| "/".into())
        } else {
            request.working_dir.clone()
        };

        let (stdio, out, err, stdin) = if request.tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
            let slave = pty.slave;
            let stdio = exec::ExecStdio {
                stdin: slave.try_clone().map_err(|e| e.to_string())?,
                stdout: slave.try_clone().map_err(|e| e.to_string())?,
                stderr: slave,
                tty: true,
            };
            let master = pty.master;
            let input = request
                .stdin
                .then(|| master.try_clone())
                .transpose()
                .map_err(|e| e.to_string())?;
            (stdio, Some(master), None, input)
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (stdin_r, stdin_w) = if request.stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (
                    File::open("/dev/null").map_err(|e| e.to_string())?.into(),
                    None,
                )
            };
            let stdio = exec::ExecStdio {
                stdin: stdin_r,
                stdout: out_w,
                stderr: err_w,
                tty: false,
            };
            (stdio, Some(out_r), Some(err_r), stdin_w)
        };
        let (pid, error_pipe) = exec::spawn(
            self.init,
            self.cgroup.as_ref(),
            self.filter.as_ref(),
            &self.spec,
            &exec::ExecProcess {
                args: &request.args,
                env,
                cwd,
                user,
                privileged: request.privileged,
            },
            stdio,
        )?;
        for fd in [&out, &err, &stdin].into_iter().flatten() {
            set_nonblocking(fd.as_raw_fd());
        }
        reply(&mut stream, &Response::Ok);
        let header = AttachHeader {
            stdin: request.stdin,
            stdout: true,
            stderr: true,
        };
        let client = Client::new(stream, header).map_err(|e| e.to_string())?;
        self.execs.push(Exec {
            id: request.id,
            pid,
            tty: request.tty,
            out,
            err,
            stdin,
            stdin_backlog: Vec::new(),
            error_pipe: Some(error_pipe),
            error: String::new(),
            exit_code: None,
            client: Some(client),
            done: false,
        });
        Ok(())
    }

    fn exec_output(&mut self, i: usize, stream: u8) {
        let Some(e) = self.execs.get_mut(i).filter(|e| !e.done) else {
            return;
        };
        let fd = if stream == STDOUT { &e.out } else { &e.err };
        let Some(raw) = fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        match read_fd(raw, &mut buf) {
            ReadResult::Data(n) => {
                let bytes = if e.tty {
                    buf[..n].to_vec()
                } else {
                    frame(stream, &buf[..n])
                };
                if let Some(c) = &mut e.client
                    && !c.send(&bytes)
                {
                    e.client = None;
                }
            }
            ReadResult::Again => {}
            ReadResult::Closed => {
                if stream == STDOUT {
                    e.out = None;
                } else {
                    e.err = None;
                }
                self.finish_exec_if_done(i);
            }
        }
    }

    fn exec_client_input(&mut self, i: usize) {
        let Some(e) = self.execs.get_mut(i).filter(|e| !e.done) else {
            return;
        };
        let Some(client) = &mut e.client else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        match client.stream.read(&mut buf) {
            Ok(0) => {
                client.input_closed = true;
                if !e.tty {
                    // The client's stdin ended: so does the process's.
                    if let Some(fd) = &e.stdin {
                        let _ = write_backlog(fd.as_raw_fd(), &mut e.stdin_backlog);
                    }
                    e.stdin = None;
                }
            }
            Ok(n) => {
                if e.stdin.is_some() && client.header.stdin {
                    e.stdin_backlog.extend_from_slice(&buf[..n]);
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                client.input_closed = true;
                e.client = None;
            }
        }
        if let Some(c) = &mut e.client
            && !c.flush()
        {
            e.client = None;
        }
    }

    /// Collects exited children: the init process, or an exec's.
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn exited(&mut self, pid: Pid, code: i32) {
        if pid == self.init {
            self.exit = Some((code, Instant::now()));
            self.status = Status::Exited;
        } else if let Some(i) = self.execs.iter().position(|e| e.pid == pid && !e.done) {
            self.execs[i].exit_code = Some(code);
            self.finish_exec_if_done(i);
        }
    }

    /// An exec is over once its process has exited and its output is read.
    fn finish_exec_if_done(&mut self, i: usize) {
        let Some(e) = self.execs.get_mut(i).filter(|e| !e.done) else {
            return;
        };
        let done =
            e.exit_code.is_some() && e.out.is_none() && e.err.is_none() && e.error_pipe.is_none();
        if !done {
            return;
        }
        e.done = true;
        let exit = ExecExit {
            exit_code: e.exit_code.unwrap_or(126),
            error: e.error.clone(),
        };
        let dir = self.state_dir.join(EXEC_DIR);
        let _ = fs::create_dir_all(&dir);
        let _ = fsutil::write_json(&dir.join(format!("{}.json", e.id)), &exit);
        if let Some(mut client) = e.client.take() {
            if !e.error.is_empty() {
                let message = format!("{}\n", e.error);
                let bytes = if e.tty {
                    message.into_bytes()
                } else {
                    frame(STDERR, message.as_bytes())
                };
                client.send(&bytes);
            }
            client.finish();
        }
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        fsutil::read_json(&self.state_dir.join(EXIT_STATUS)).ok()
    }

    /// The container has exited: record how, tell everyone, clean up.
    fn finish(&mut self) {
        let code = self.exit.map_or(255, |(code, _)| code);
        let _ = self.log.flush_partial();
        let status = ExitStatus {
            exit_code: code,
            finished_at: OffsetDateTime::now_utc(),
            oom_killed: match &self.cgroup {
                Some(cgroup) => cgroup.oom_killed(),
                None => oom_killed(&self.spec),
            },
            error: String::new(),
        };
        // The record, without waiting for the disk (it is synced below,
        // once nobody waits on it).
        let exit_path = self.state_dir.join(EXIT_STATUS);
        if let Err(e) = fsutil::write_json_unsynced(&exit_path, &status) {
            eprintln!("shim: recording the exit status: {e}");
        }
        let _ = self.save_state();
        // An exited container has no cgroups left by the time anyone hears
        // of the exit. libcontainer's own cgroups (cgroup v2) go with its
        // delete.
        match &self.cgroup {
            Some(cgroup) => {
                if let Err(e) = cgroup.remove() {
                    eprintln!("shim: removing the cgroups: {e}");
                }
            }
            None => {
                if let Err(e) = self.container.delete(true) {
                    eprintln!("shim: deleting the container: {e}");
                }
            }
        }
        // No new connections (the engine then reads exit.json); those
        // already queued are answered like the waiters.
        let _ = fs::remove_file(self.config.run_dir.join(CONTROL_SOCKET));
        let _ = fs::remove_file(self.config.run_dir.join(ATTACH_SOCKET));
        for mut waiter in self.waiters.drain(..) {
            reply(&mut waiter, &Response::Exited(status.clone()));
        }
        while let Ok((stream, _)) = self.control.accept() {
            self.control_request(stream);
        }
        for client in self.clients.drain(..) {
            client.finish();
        }
        for mut e in self.execs.drain(..) {
            if let Some(c) = e.client.take() {
                c.finish();
            }
        }
        // libcontainer's state (its delete has nothing else to do when the
        // cgroups are moat's) and the sockets.
        let _ = fs::remove_dir_all(&self.config.run_dir);
        if let Err(e) = fsutil::sync(&exit_path)
            && e.kind() != ErrorKind::NotFound
        {
            eprintln!("shim: syncing the exit status: {e}");
        }
        self.sync_state();
    }
}

/// Ends a created container that the shim cannot serve: its init process
/// (the shim's child) is killed and reaped, libcontainer's state and the
/// cgroups removed.
fn abandon(container: &mut Container, init: Option<Pid>, cgroup: Option<&ContainerCgroup>) {
    if let Some(pid) = init {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    if let Err(e) = container.delete(true) {
        eprintln!("shim: deleting the container: {e}");
    }
    if let Some(cgroup) = cgroup
        && let Err(e) = cgroup.remove()
    {
        eprintln!("shim: removing the cgroups: {e}");
    }
}

/// Every signal back to its default action, none blocked.
pub fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let _ = SigSet::empty().thread_set_mask();
}

fn set_process_user(spec: &mut Spec, user: &rootfs::ProcessUser) {
    let Some(mut process) = spec.process().clone() else {
        return;
    };
    let mut oci_user = process.user().clone();
    oci_user.set_uid(user.uid);
    oci_user.set_gid(user.gid);
    oci_user.set_additional_gids(Some(user.additional_gids.clone()));
    process.set_user(oci_user);
    if user.uid != 0 {
        // As the kernel would on setuid: a non-root user keeps only the
        // bounding set, never effective capabilities.
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_effective(Some(Default::default()));
            caps.set_permitted(Some(Default::default()));
            caps.set_inheritable(Some(Default::default()));
            caps.set_ambient(Some(Default::default()));
            process.set_capabilities(Some(caps));
        }
    }
    spec.set_process(Some(process));
}

/// Whether the OOM killer acted in the container's memory cgroup, when
/// libcontainer manages it (cgroup v2: `memory.events`).
fn oom_killed(spec: &Spec) -> bool {
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return false;
    };
    let rel = path.to_string_lossy().trim_start_matches('/').to_owned();
    fs::read_to_string(Path::new("/sys/fs/cgroup").join(rel).join("memory.events"))
        .is_ok_and(|text| crate::cgroups::oom_kill_count(&text) > 0)
}

/// libcontainer's errors nest; the innermost message is what a person
/// needs, in the words the docker CLI looks for (it exits 127 on
/// "executable file not found").
fn describe_libcontainer_error(message: &str) -> String {
    let inner = message
        .rsplit("error in executing process : ")
        .next()
        .unwrap_or(message)
        .trim_end_matches(['"', ')'])
        .to_owned();
    match inner
        .strip_prefix("executable '")
        .and_then(|rest| rest.split_once("' not found in $PATH"))
    {
        Some((program, _)) => format!("exec: \"{program}\": executable file not found in $PATH"),
        None => format!("unable to start container process: {inner}"),
    }
}

fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let mut buf = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("receiving the pty: {e}"))?;
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS gave us a new descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the console socket sent no pty".into())
}

fn bind(path: &Path) -> Result<UnixListener, String> {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(listener)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn set_nonblocking(fd: RawFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

enum ReadResult {
    Data(usize),
    Again,
    Closed,
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> ReadResult {
    match nix::unistd::read(fd, buf) {
        Ok(0) => ReadResult::Closed,
        Ok(n) => ReadResult::Data(n),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => ReadResult::Again,
        // A pty master reads EIO once the last slave is closed.
        Err(_) => ReadResult::Closed,
    }
}

/// Writes what it can; false when the reader is gone.
fn write_backlog(fd: RawFd, backlog: &mut Vec<u8>) -> bool {
    while !backlog.is_empty() {
        // SAFETY: the descriptor is open for as long as its owner is borrowed by the caller.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(borrowed, backlog) {
            Ok(n) => {
                backlog.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}

fn resize(fd: RawFd, height: u16, width: u16) -> Response {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own for the length of the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) } != 0 {
        return Response::Error {
            message: format!("resize: {}", std::io::Error::last_os_error()),
        };
    }
    Response::Ok
}

/// Reads one `\n`-terminated JSON value, byte by byte so that nothing after
/// the line (an exec's stdin, say) is consumed.
pub fn read_json_line<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
) -> Result<T, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err("connection closed before a request".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > 1 << 20 {
                    return Err("request line too long".into());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))
}

pub fn write_json_line(stream: &mut UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn reply(stream: &mut UnixStream, response: &Response) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = write_json_line(stream, response);
}

/// The exec results a shim left, by exec id.
pub fn exec_exits(state_dir: &Path) -> HashMap<String, ExecExit> {
    let mut out = HashMap::new();
    if let Ok(entries) = fs::read_dir(state_dir.join(EXEC_DIR)) {
        for entry in entries.flatten() {
            let path = entry.path();
            if let (Some(id), Ok(exit)) = (
                path.file_stem().map(|s| s.to_string_lossy().into_owned()),
                fsutil::read_json::<ExecExit>(&path),
            ) {
                out.insert(id, exit);
            }
        }
    }
    out
}
