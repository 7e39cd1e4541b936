//! The engine's side of running containers: the container store on disk,
//! and each lifecycle operation, carried out through the container's shim.
//!
//! A container's persistent files live in `STATE/containers/<id>/`; its
//! sockets in `RUN/<id>/` (kept short, as Unix socket paths must be). A
//! container is created in a temporary directory and renamed into place,
//! so an engine killed in the middle of a create leaves a whole container
//! or none; the leftovers of a half-made one are removed at start-up.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{ConfigError, EngineError, Result};
use crate::fsutil;
use crate::shim::protocol::{
    AttachHeader, ExecExit, ExecRequest, ExitStatus, Request, Response, ShimState, Status,
};
use crate::shim::rootfs::Layers;
use crate::shim::{
    self, ATTACH_SOCKET, CONTROL_SOCKET, EXIT_STATUS, LOG_FILE, OCI_SPEC, SHIM_CONFIG, SHIM_STATE,
    ShimConfig, read_json_line, write_json_line,
};
use crate::spec::{self, Source, SpecContext};
use crate::userns::IdMap;
use moat_api::container::ContainerConfig;

const RECORD: &str = "container.json";
const TMP_PREFIX: &str = ".creating-";
const REMOVING_PREFIX: &str = ".removing-";
/// The longest run directory that leaves room for `<64-char id>/attach.sock`
/// within the 108 bytes of a Unix socket path.
const MAX_RUN_ROOT_LEN: usize = 40;

/// How the engine runs containers.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Persistent state: `containers/`, `volumes/`.
    pub state_root: PathBuf,
    /// Sockets and libcontainer state; gone after a reboot, as are containers.
    pub run_root: PathBuf,
    /// The `moat` binary, re-executed as `moat shim` for each container.
    pub shim_binary: PathBuf,
    /// The subordinate id range containers run as.
    pub id_map: IdMap,
    /// Parent of every container's cgroup.
    pub cgroup_parent: String,
    /// json-file rotation: `max-size` in bytes (0: never) and `max-file`.
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Remove `AutoRemove` containers when they exit, from a thread of the
    /// runtime's own. The API server turns this off: it removes them itself
    /// after reading the exit status its clients wait for.
    pub remove_on_exit: bool,
}

/// What is persisted about a container (`container.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub config: ContainerConfig,
    /// The image reference it was created from, as given.
    pub image: String,
    /// The image's id (`sha256:...`) at creation.
    #[serde(default)]
    pub image_id: String,
    /// Read-only layers, top first, owned by the ids the container runs as.
    pub layers: Vec<PathBuf>,
    pub userns: bool,
    #[serde(default)]
    pub restart_count: u32,
}

/// A container as Docker's inspect would describe its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerState {
    pub status: StateName,
    pub pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Created,
    Running,
    Paused,
    Exited,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Created => "created",
            StateName::Running => "running",
            StateName::Paused => "paused",
            StateName::Exited => "exited",
        }
    }
}

/// One reading of a container's resource use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSample {
    pub pids: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub cpu_total_ns: u64,
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
}

/// A container to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub config: ContainerConfig,
    pub image: String,
    pub image_id: String,
    /// Read-only layers, top first, prepared for `config`'s user namespace mode.
    pub layers: Vec<PathBuf>,
}

pub struct Runtime {
    config: RuntimeConfig,
    /// Serializes changes to the set of containers and their names.
    names: Mutex<()>,
    /// One lock per container, held across each lifecycle operation.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// A shim started ahead of time, for the next start.
    spare_shim: Arc<Mutex<Option<SpareShim>>>,
}

impl Runtime {
    /// Opens the store, finishing or undoing what an engine that died left.
    pub fn open(config: RuntimeConfig) -> Result<Runtime> {
        if config.run_root.as_os_str().len() > MAX_RUN_ROOT_LEN {
            return Err(EngineError::Conflict(format!(
                "run directory {} is longer than {MAX_RUN_ROOT_LEN} bytes; Unix socket paths would not fit",
                config.run_root.display()
            )));
        }
        for dir in [
            config.state_root.join("containers"),
            config.state_root.join("volumes"),
            config.run_root.clone(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&dir)
                .map_err(EngineError::io(&dir))?;
        }
        make_traversable(&config.state_root)?;
        let runtime = Runtime {
            config,
            names: Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            spare_shim: Arc::new(Mutex::new(None)),
        };
        runtime.recover()?;
        Ok(runtime)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn containers_dir(&self) -> PathBuf {
        self.config.state_root.join("containers")
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.config.run_root.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(LOG_FILE)
    }

    fn lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Half-created and half-removed containers are removed; containers
    /// whose shim died without recording an exit are marked as exited with
    /// an error.
    fn recover(&self) -> Result<()> {
        let dir = self.containers_dir();
        for entry in fs::read_dir(&dir).map_err(EngineError::io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let Ok(record) = self.record(&name) else {
                continue;
            };
            let path = entry.path();
            let shim_state: Option<ShimState> = fsutil::read_json(&path.join(SHIM_STATE)).ok();
            let exited = path.join(EXIT_STATUS).exists();
            if let (Some(state), false) = (shim_state, exited)
                && !process_alive(state.shim_pid)
            {
                // The shim is gone: nothing watches the container any more.
                if process_alive(state.pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(state.pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let status = ExitStatus {
                    exit_code: 255,
                    finished_at: OffsetDateTime::now_utc(),
                    oom_killed: false,
                    error: "the container's shim exited unexpectedly".into(),
                };
                let _ = fsutil::write_json(&path.join(EXIT_STATUS), &status);
            }
            if record.config.host_config.auto_remove
                && self
                    .state(&record.id)
                    .is_ok_and(|s| s.status == StateName::Exited)
            {
                let _ = self.remove(&record.id, false);
            }
        }
        Ok(())
    }

    /// Creates a container: checks the configuration, writes its files, and
    /// prepares its writable layer. Nothing runs yet.
    pub fn create(&self, request: CreateRequest) -> Result<ContainerRecord> {
        let userns = spec::userns_enabled(&request.config)?;
        let id_map = if userns {
            self.config.id_map
        } else {
            IdMap::HOST
        };
        if request.layers.is_empty() {
            return Err(ConfigError::invalid("Image", "the image has no layers").into());
        }
        for layer in &request.layers {
            if !layer.is_dir() {
                return Err(ConfigError::invalid(
                    "Image",
                    format!("layer {} is missing", layer.display()),
                )
                .into());
            }
        }
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let id = random_id()?;
        let name = match &request.name {
            Some(name) => {
                let name = validate_name(name)?;
                if self.find_by_name(&name)?.is_some() {
                    return Err(EngineError::Conflict(format!(
                        "the container name \"/{name}\" is already in use"
                    )));
                }
                name
            }
            None => self.generate_name(&id)?,
        };

        let final_dir = self.dir(&id);
        let tmp = self.containers_dir().join(format!("{TMP_PREFIX}{id}"));
        let spec = spec::build(
            &request.config,
            &SpecContext {
                id: &id,
                dir: &final_dir,
                rootfs: &final_dir.join("rootfs"),
                id_map,
                volumes: &self.config.state_root.join("volumes"),
                cgroup_parent: &self.config.cgroup_parent,
            },
        )?;
        let result = (|| -> Result<ContainerRecord> {
            fs::DirBuilder::new()
                .mode(0o711)
                .create(&tmp)
                .map_err(EngineError::io(&tmp))?;
            for sub in ["rootfs", "upper", "work"] {
                let path = tmp.join(sub);
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(EngineError::io(&path))?;
            }
            // The container's root owns its writable layer and its /etc files.
            let (uid, gid) = (id_map.uid, id_map.gid);
            for sub in ["upper", "work"] {
                chown(&tmp.join(sub), uid, gid)?;
            }
            let hostname = spec.hostname().clone().unwrap_or_default();
            let files = [
                ("hostname", format!("{hostname}\n")),
                (
                    "hosts",
                    hosts_file(&hostname, &request.config.host_config.extra_hosts)?,
                ),
                ("resolv.conf", resolv_conf()),
            ];
            let files_written = files.each_ref().map(|(file, _)| *file);
            for (file, content) in files {
                let path = tmp.join(file);
                fs::write(&path, content).map_err(EngineError::io(&path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(EngineError::io(&path))?;
                chown(&path, uid, gid)?;
            }
            self.prepare_volumes(&request.config, id_map)?;
            spec.save(tmp.join(OCI_SPEC))
                .map_err(|e| EngineError::runtime(&id, format!("writing the OCI spec: {e}")))?;
            let shim_config = ShimConfig {
                id: id.clone(),
                tty: request.config.tty,
                open_stdin: request.config.open_stdin,
                stdin_once: request.config.stdin_once,
                user: request.config.user.clone(),
                layers: Layers {
                    lower: request.layers.clone(),
                    upper: final_dir.join("upper"),
                    work: final_dir.join("work"),
                },
                rootfs: final_dir.join("rootfs"),
                run_dir: self.run_dir(&id),
                log_max_size: self.config.log_max_size,
                log_max_files: self.config.log_max_files,
            };
            write_json(&tmp.join(SHIM_CONFIG), &shim_config)?;
            let record = ContainerRecord {
                id: id.clone(),
                name,
                created: OffsetDateTime::now_utc(),
                config: request.config.clone(),
                image: request.image.clone(),
                image_id: request.image_id.clone(),
                layers: request.layers.clone(),
                userns,
                restart_count: 0,
            };
            write_json(&tmp.join(RECORD), &record)?;
            fs::rename(&tmp, &final_dir).map_err(EngineError::io(&final_dir))?;
            // The rename makes the container whole or absent to a crash of
            // the engine; the disk catches up just after the answer, so
            // `docker create` does not wait on the journal.
            let mut durable: Vec<PathBuf> = [OCI_SPEC, SHIM_CONFIG, RECORD]
                .into_iter()
                .chain(files_written)
                .map(|f| final_dir.join(f))
                .collect();
            durable.push(final_dir.clone());
            fsutil::sync_later(durable);
            Ok(record)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Named volumes are directories under the state root, owned by the
    /// container's root.
    fn prepare_volumes(&self, config: &ContainerConfig, id_map: IdMap) -> Result<()> {
        for (source, _, _) in spec::mount_sources(config)? {
            if let Source::Volume(name) = source {
                let data = self
                    .config
                    .state_root
                    .join("volumes")
                    .join(&name)
                    .join("_data");
                if !data.exists() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(&data)
                        .map_err(EngineError::io(&data))?;
                    chown(&data, id_map.uid, id_map.gid)?;
                }
            }
        }
        Ok(())
    }

    /// Starts a created or exited container. Streams for `attach` are
    /// connected before the process runs, so they miss none of its output.
    pub fn start(&self, id: &str, attach: &[AttachHeader]) -> Result<Vec<UnixStream>> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.record(id)?;
        match self.state(id)?.status {
            StateName::Running | StateName::Paused => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is already running"
                )));
            }
            StateName::Created | StateName::Exited => {}
        }
        // A previous run's shim answers as soon as its container has
        // exited and finishes its clean-up after; it must be gone before a
        // new one takes over the run directory.
        let dir = self.dir(id);
        if let Ok(previous) = fsutil::read_json::<ShimState>(&dir.join(SHIM_STATE)) {
            wait_for_shim_exit(previous.shim_pid, &dir, Duration::from_secs(10));
        }
        // A previous run's files go before the new one starts.
        for file in [SHIM_STATE, EXIT_STATUS] {
            let _ = fs::remove_file(dir.join(file));
        }
        let _ = fs::remove_dir_all(self.run_dir(id));
        let output = self
            .run_shim(&dir)
            .map_err(|e| EngineError::runtime(id, format!("starting the shim: {e}")))?;
        if !output.status.success() {
            let mut message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            // libcontainer's own account of the failure, when it adds something.
            if let Some(detail) = last_error_line(&dir.join("shim.log"))
                && !message.contains(detail.rsplit(": ").next().unwrap_or(&detail))
            {
                message = format!("{message}: {detail}");
            }
            return Err(EngineError::runtime(id, message));
        }
        let mut streams = Vec::with_capacity(attach.len());
        for header in attach {
            streams.push(self.attach(id, header)?);
        }
        self.request(id, &Request::Start)?;
        if record.config.host_config.auto_remove && self.config.remove_on_exit {
            self.remove_after_exit(id);
        }
        Ok(streams)
    }

    /// Runs `moat shim DIR` and returns its report: through the spare shim
    /// when there is one (its exec and start-up are already done), then
    /// starts the next spare on a thread of its own.
    fn run_shim(&self, dir: &Path) -> std::io::Result<std::process::Output> {
        let spare = self
            .spare_shim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let output = match spare.and_then(SpareShim::ready).and_then(|s| s.run(dir)) {
            Some(output) => output,
            None => Command::new(&self.config.shim_binary)
                .arg("shim")
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output(),
        };
        let slot = self.spare_shim.clone();
        let binary = self.config.shim_binary.clone();
        std::thread::spawn(move || {
            if let Ok(spare) = SpareShim::spawn(&binary) {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(spare);
                }
            }
        });
        output
    }

    /// AutoRemove: a watcher waits for the exit and removes the container.
    fn remove_after_exit(&self, id: &str) {
        let socket = self.run_dir(id).join(CONTROL_SOCKET);
        let dir = self.dir(id);
        let run_dir = self.run_dir(id);
        std::thread::spawn(move || {
            // The shim may be gone already (a short-lived container): then
            // its exit status is on disk.
            let exited = matches!(wait_on(&socket, None), Ok(Some(_))) || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !dir.join(EXIT_STATUS).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                dir.join(EXIT_STATUS).exists()
            };
            if exited {
                let _ = fs::remove_dir_all(&dir);
                let _ = fs::remove_dir_all(&run_dir);
            }
        });
    }

    /// Connects a client to the container's streams.
    pub fn attach(&self, id: &str, header: &AttachHeader) -> Result<UnixStream> {
        let path = self.run_dir(id).join(ATTACH_SOCKET);
        let mut stream = UnixStream::connect(&path)
            .map_err(|_| EngineError::Conflict(format!("container {id} is not running")))?;
        write_json_line(&mut stream, header).map_err(EngineError::io(&path))?;
        Ok(stream)
    }

    /// Sends a signal to the container's main process.
    pub fn kill(&self, id: &str, signal: i32) -> Result<()> {
        self.request(id, &Request::Kill { signal }).map(drop)
    }

    /// Docker's stop: the stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<ExitStatus> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.record(id)?;
        if !matches!(
            self.state(id)?.status,
            StateName::Running | StateName::Paused
        ) {
            return self.exit_status(id);
        }
        let signal = stop_signal(&record.config.stop_signal);
        let _ = self.kill(id, signal);
        match self.wait_timeout(id, timeout) {
            Some(status) => Ok(status),
            None => {
                let _ = self.kill(id, libc::SIGKILL);
                self.wait(id)
            }
        }
    }

    /// Blocks until the container has exited; returns how it ended.
    pub fn wait(&self, id: &str) -> Result<ExitStatus> {
        self.record(id)?;
        let socket = self.run_dir(id).join(CONTROL_SOCKET);
        match wait_on(&socket, None) {
            Ok(Some(status)) => Ok(status),
            _ => self.exit_status(id),
        }
    }

    /// Waits up to `timeout` for the container's exit. The shim answers a
    /// wait once the exit is recorded and the cgroups are gone; without a
    /// shim to ask (it has answered everyone and gone), `exit.json` says.
    fn wait_timeout(&self, id: &str, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        if let Ok(status) = wait_on(&self.run_dir(id).join(CONTROL_SOCKET), Some(timeout)) {
            return status;
        }
        loop {
            if let Ok(status) = fsutil::read_json::<ExitStatus>(&self.dir(id).join(EXIT_STATUS)) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How the last run ended; exit code 0 with no time for one never run.
    pub fn exit_status(&self, id: &str) -> Result<ExitStatus> {
        self.record(id)?;
        Ok(
            fsutil::read_json(&self.dir(id).join(EXIT_STATUS)).unwrap_or(ExitStatus {
                exit_code: 0,
                finished_at: OffsetDateTime::UNIX_EPOCH,
                oom_killed: false,
                error: String::new(),
            }),
        )
    }

    pub fn restart(&self, id: &str, timeout: Duration) -> Result<()> {
        self.stop(id, timeout)?;
        let mut record = self.record(id)?;
        record.restart_count += 1;
        fsutil::write_json(&self.dir(id).join(RECORD), &record)
            .map_err(EngineError::io(self.dir(id)))?;
        self.start(id, &[]).map(drop)
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.request(id, &Request::Pause).map(drop)
    }

    pub fn unpause(&self, id: &str) -> Result<()> {
        self.request(id, &Request::Resume).map(drop)
    }

    pub fn resize(&self, id: &str, height: u16, width: u16) -> Result<()> {
        self.request(id, &Request::Resize { height, width })
            .map(drop)
    }

    /// Removes a container; a running one only with `force` (it is killed).
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.record(id)?;
        if matches!(
            self.state(id)?.status,
            StateName::Running | StateName::Paused
        ) {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "cannot remove container {id}: it is running (stop it first, or force)"
                )));
            }
            let _ = self.kill(id, libc::SIGKILL);
            let _ = self.wait_timeout(id, Duration::from_secs(10));
        }
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        // The container is gone at once (a rename out of the store); its
        // files, a writable layer of any size among them, go on a thread of
        // their own, or at the next start if the engine dies first.
        let dir = self.dir(id);
        let trash = self.containers_dir().join(format!("{REMOVING_PREFIX}{id}"));
        fs::rename(&dir, &trash).map_err(EngineError::io(&dir))?;
        std::thread::spawn(move || {
            let _ = fs::remove_dir_all(&trash);
        });
        let _ = fs::remove_dir_all(self.run_dir(id));
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    /// Starts a process in the running container; the returned stream
    /// carries its output (Docker frames without a TTY) and takes its stdin.
    pub fn exec(&self, id: &str, request: &ExecRequest) -> Result<UnixStream> {
        let path = self.run_dir(id).join(CONTROL_SOCKET);
        let mut stream = UnixStream::connect(&path)
            .map_err(|_| EngineError::Conflict(format!("container {id} is not running")))?;
        write_json_line(&mut stream, &Request::Exec(request.clone()))
            .map_err(EngineError::io(&path))?;
        match read_json_line::<Response>(&mut stream).map_err(|e| EngineError::runtime(id, e))? {
            Response::Ok => Ok(stream),
            Response::Error { message } => Err(EngineError::Conflict(message)),
            other => Err(EngineError::runtime(
                id,
                format!("unexpected answer {other:?}"),
            )),
        }
    }

    /// How an exec'd process ended, once it has.
    pub fn exec_exit(&self, id: &str, exec_id: &str) -> Option<ExecExit> {
        shim::exec_exits(&self.dir(id)).remove(exec_id)
    }

    pub fn exec_resize(&self, id: &str, exec_id: &str, height: u16, width: u16) -> Result<()> {
        let request = Request::ExecResize {
            id: exec_id.to_owned(),
            height,
            width,
        };
        self.request(id, &request).map(drop)
    }

    fn request(&self, id: &str, request: &Request) -> Result<Response> {
        let path = self.run_dir(id).join(CONTROL_SOCKET);
        let mut stream = UnixStream::connect(&path)
            .map_err(|_| EngineError::Conflict(format!("container {id} is not running")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(EngineError::io(&path))?;
        write_json_line(&mut stream, request).map_err(EngineError::io(&path))?;
        match read_json_line::<Response>(&mut stream).map_err(|e| EngineError::runtime(id, e))? {
            Response::Error { message } => Err(EngineError::Conflict(message)),
            response => Ok(response),
        }
    }

    pub fn record(&self, id: &str) -> Result<ContainerRecord> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(EngineError::NoSuchContainer(id.to_owned()));
        }
        fsutil::read_json(&self.dir(id).join(RECORD))
            .map_err(|_| EngineError::NoSuchContainer(id.to_owned()))
    }

    /// The container's state, from its shim's files and whether it is alive.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        self.record(id)?;
        let dir = self.dir(id);
        let shim_state: Option<ShimState> = fsutil::read_json(&dir.join(SHIM_STATE)).ok();
        let exit: Option<ExitStatus> = fsutil::read_json(&dir.join(EXIT_STATUS)).ok();
        let started_at = shim_state.as_ref().map(|s| s.started_at);
        let state = match (shim_state, exit) {
            (_, Some(exit)) => ContainerState {
                status: if started_at.is_some() {
                    StateName::Exited
                } else {
                    StateName::Created
                },
                pid: 0,
                exit_code: exit.exit_code,
                oom_killed: exit.oom_killed,
                error: exit.error,
                started_at,
                finished_at: Some(exit.finished_at),
            },
            (Some(s), None) if process_alive(s.shim_pid) => ContainerState {
                status: match s.status {
                    Status::Created => StateName::Created,
                    Status::Paused => StateName::Paused,
                    Status::Running | Status::Exited => StateName::Running,
                },
                pid: s.pid,
                exit_code: 0,
                oom_killed: false,
                error: String::new(),
                started_at,
                finished_at: None,
            },
            _ => ContainerState {
                status: StateName::Created,
                pid: 0,
                exit_code: 0,
                oom_killed: false,
                error: String::new(),
                started_at: None,
                finished_at: None,
            },
        };
        Ok(state)
    }

    /// The shim's pid while the container runs.
    pub fn shim_pid(&self, id: &str) -> Option<i32> {
        let state: ShimState = fsutil::read_json(&self.dir(id).join(SHIM_STATE)).ok()?;
        (process_alive(state.shim_pid) && !self.dir(id).join(EXIT_STATUS).exists())
            .then_some(state.shim_pid)
    }

    /// The container's state directory.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.dir(id)
    }

    /// Every container's record.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(EngineError::io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(record) = self.record(&name) {
                out.push(record);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(out)
    }

    /// Finds a container as Docker does: full id, then name, then a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<String> {
        let reference = reference.trim_start_matches('/');
        if reference.is_empty() {
            return Err(EngineError::NoSuchContainer(reference.to_owned()));
        }
        if self.record(reference).is_ok() {
            return Ok(reference.to_owned());
        }
        if let Some(id) = self.find_by_name(reference)? {
            return Ok(id);
        }
        let matches: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|r| r.id.starts_with(reference))
            .map(|r| r.id)
            .collect();
        match matches.as_slice() {
            [id] => Ok(id.clone()),
            [] => Err(EngineError::NoSuchContainer(reference.to_owned())),
            _ => Err(EngineError::Conflict(format!(
                "multiple containers found with id prefix {reference}"
            ))),
        }
    }

    /// The container's cgroup directory in `controller`'s hierarchy (v1),
    /// or in the unified hierarchy.
    fn cgroup_dir(&self, id: &str, controller: &str) -> PathBuf {
        let rel = format!("{}/{id}", self.config.cgroup_parent.trim_matches('/'));
        let v1 = Path::new("/sys/fs/cgroup").join(controller).join(&rel);
        if v1.exists() {
            v1
        } else {
            Path::new("/sys/fs/cgroup").join(rel)
        }
    }

    /// The host pids of the container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let file = self.cgroup_dir(id, "pids").join("cgroup.procs");
        let text = fs::read_to_string(&file)
            .map_err(|_| EngineError::Conflict(format!("container {id} is not running")))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// One sample of the container's resource use, from its cgroups.
    pub fn stats(&self, id: &str) -> Result<StatsSample> {
        let read = |controller: &str, files: &[&str]| -> u64 {
            let dir = self.cgroup_dir(id, controller);
            files
                .iter()
                .find_map(|f| fs::read_to_string(dir.join(f)).ok())
                .and_then(|v| {
                    let v = v.trim();
                    if v == "max" {
                        Some(u64::MAX)
                    } else {
                        v.split_whitespace().next()?.parse().ok()
                    }
                })
                .unwrap_or(0)
        };
        if !self.cgroup_dir(id, "pids").exists() {
            return Err(EngineError::Conflict(format!(
                "container {id} is not running"
            )));
        }
        let system = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_owned();
                Some(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum::<u64>(),
                )
            })
            .unwrap_or(0);
        Ok(StatsSample {
            pids: read("pids", &["pids.current"]),
            memory_usage: read("memory", &["memory.usage_in_bytes", "memory.current"]),
            memory_limit: read("memory", &["memory.limit_in_bytes", "memory.max"]),
            cpu_total_ns: read("cpuacct", &["cpuacct.usage"]),
            // /proc/stat counts USER_HZ (100 per second) ticks.
            system_cpu_ns: system * 10_000_000,
            online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        })
    }

    fn find_by_name(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .list()?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.id))
    }

    pub fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let new_name = validate_name(new_name)?;
        let _names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if self.find_by_name(&new_name)?.is_some() {
            return Err(EngineError::Conflict(format!(
                "the container name \"/{new_name}\" is already in use"
            )));
        }
        let mut record = self.record(id)?;
        record.name = new_name;
        fsutil::write_json(&self.dir(id).join(RECORD), &record)
            .map_err(EngineError::io(self.dir(id)))
    }

    fn generate_name(&self, id: &str) -> Result<String> {
        const ADJECTIVES: [&str; 8] = [
            "brave", "calm", "eager", "keen", "quiet", "steady", "swift", "wise",
        ];
        const NOUNS: [&str; 8] = [
            "heron", "otter", "falcon", "badger", "lynx", "marten", "raven", "wren",
        ];
        let bytes = id.as_bytes();
        let adjective = ADJECTIVES[(bytes[0] as usize) % ADJECTIVES.len()];
        let noun = NOUNS[(bytes[1] as usize) % NOUNS.len()];
        let base = format!("{adjective}_{noun}");
        let mut name = base.clone();
        let mut n = 1;
        while self.find_by_name(&name)?.is_some() {
            n += 1;
            name = format!("{base}{n}");
        }
        Ok(name)
    }
}

/// A user-namespaced container's root (an unprivileged host uid) must be
/// able to pass through the state directories to reach its root filesystem
/// and bind mounts, as dockerd makes `/var/lib/docker` 0711. The engine's
/// own directories get the search bit; an ancestor without it is an error
/// that says which.
fn make_traversable(state_root: &Path) -> Result<()> {
    for dir in [state_root.to_path_buf(), state_root.join("containers")] {
        let meta = fs::metadata(&dir).map_err(EngineError::io(&dir))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode((mode | 0o111) & 0o7777))
                .map_err(EngineError::io(&dir))?;
        }
    }
    let mut dir = state_root.parent();
    while let Some(d) = dir {
        let mode = fs::metadata(d)
            .map_err(EngineError::io(d))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(EngineError::UserNamespace(format!(
                "{} (mode {:04o}) cannot be passed through by a container's remapped root; \
                 give it the search bit for others (chmod o+x) or move the state root",
                d.display(),
                mode & 0o7777
            )));
        }
        dir = d.parent();
    }
    Ok(())
}

/// The last ERROR line libcontainer logged, without its timestamp.
fn last_error_line(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("ERROR"))?;
    Some(
        line.split_once("ERROR")
            .map_or(line, |(_, rest)| rest)
            .trim()
            .to_owned(),
    )
}

/// Asks a shim to answer once its container has exited; `None` when
/// `timeout` passes first. An error when there is no shim to ask.
fn wait_on(
    socket: &Path,
    timeout: Option<Duration>,
) -> std::result::Result<Option<ExitStatus>, String> {
    use std::io::BufRead;
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    write_json_line(&mut stream, &Request::Wait).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(timeout.filter(|t| !t.is_zero()))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    match std::io::BufReader::new(&stream).read_line(&mut line) {
        Ok(0) => return Err("the shim closed the connection".into()),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    }
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Exited(status)) => Ok(Some(status)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Docker's container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading `/`.
pub fn validate_name(name: &str) -> Result<String, ConfigError> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let valid = name.len() >= 2
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid {
        return Err(ConfigError::invalid(
            "name",
            format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    Ok(name.to_owned())
}

/// `SIGTERM`, `TERM`, `15` → the number; Docker's default is SIGTERM.
pub fn stop_signal(name: &str) -> i32 {
    parse_signal(name).unwrap_or(libc::SIGTERM)
}

pub fn parse_signal(name: &str) -> Option<i32> {
    if name.is_empty() {
        return None;
    }
    if let Ok(n) = name.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// `moat shim -` started ahead of time: exec'd, linked and waiting on its
/// stdin for the state directory of the container it is to run, so that a
/// start does not wait for the binary to load.
struct SpareShim {
    child: Option<std::process::Child>,
}

impl SpareShim {
    fn spawn(binary: &Path) -> std::io::Result<SpareShim> {
        let child = Command::new(binary)
            .arg("shim")
            .arg(shim::SPARE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(SpareShim { child: Some(child) })
    }

    /// Still waiting (not killed meanwhile).
    fn ready(mut self) -> Option<SpareShim> {
        let waiting = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        waiting.then_some(self)
    }

    /// Hands it the state directory; its report, as `Command::output` gives
    /// one, or `None` when it was gone before it could take the directory.
    fn run(mut self, dir: &Path) -> Option<std::io::Result<std::process::Output>> {
        use std::io::Write;
        let mut line = dir.as_os_str().as_bytes().to_vec();
        line.push(b'\n');
        let mut stdin = self.child.as_mut()?.stdin.take()?;
        if stdin.write_all(&line).is_err() {
            return None;
        }
        drop(stdin);
        Some(self.child.take()?.wait_with_output())
    }
}

impl Drop for SpareShim {
    /// An unused spare reads end-of-file and exits; it is reaped here.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Waits (bounded) until the shim `pid` of the container in `state_dir`
/// has exited; a pid that is no longer that shim counts as exited.
fn wait_for_shim_exit(pid: i32, state_dir: &Path, timeout: Duration) {
    if pid <= 0 {
        return;
    }
    // SAFETY: pidfd_open with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // Checked after the pidfd is held, so the pid cannot be reused between.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_the_shim = cmdline.split(|b| *b == 0).any(|arg| arg == b"shim")
        && cmdline
            .split(|b| *b == 0)
            .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)) == state_dir);
    if !is_the_shim {
        return;
    }
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}

fn process_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// A JSON file in a container's directory while it is being created (the
/// directory's rename is what makes it appear whole).
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::io(path)(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    fs::write(path, bytes).map_err(EngineError::io(path))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(EngineError::io(path))
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(EngineError::io("/dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn hosts_file(hostname: &str, extra: &[String]) -> Result<String> {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    out.push_str(&format!("127.0.0.1\t{hostname}\n"));
    for entry in extra {
        let (host, ip) = entry.split_once(':').ok_or_else(|| {
            ConfigError::invalid("HostConfig.ExtraHosts", format!("{entry:?} is not HOST:IP"))
        })?;
        if ip.parse::<std::net::IpAddr>().is_err()
            || host.is_empty()
            || host.contains(char::is_whitespace)
        {
            return Err(ConfigError::invalid(
                "HostConfig.ExtraHosts",
                format!("{entry:?} is not HOST:IP"),
            )
            .into());
        }
        out.push_str(&format!("{ip}\t{host}\n"));
    }
    Ok(out)
}

/// The host's resolver configuration without loopback name servers, which
/// mean nothing inside the container's network namespace.
fn resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::from("# written by moat for this container\n");
    for line in host.lines() {
        let loopback = line
            .strip_prefix("nameserver")
            .map(|ns| ns.trim().starts_with("127.") || ns.trim() == "::1")
            .unwrap_or(false);
        if !loopback {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker() {
        assert_eq!(validate_name("/web").unwrap(), "web");
        assert_eq!(validate_name("a.b_c-1").unwrap(), "a.b_c-1");
        for bad in ["", "a", "-a", "a b", "a/b", "ä1"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(stop_signal(""), 15);
    }

    #[test]
    fn extra_hosts_are_checked() {
        let hosts = hosts_file("web", &["db:10.0.0.2".into()]).unwrap();
        assert!(hosts.contains("10.0.0.2\tdb\n") && hosts.contains("127.0.0.1\tweb\n"));
        assert!(hosts_file("web", &["db".into()]).is_err());
        assert!(hosts_file("web", &["db:nope".into()]).is_err());
    }
}
