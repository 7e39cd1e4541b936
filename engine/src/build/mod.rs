//! `docker build` (the classic builder's `POST /build`): a Dockerfile run
//! step by step over an unpacked build context, each step's result an
//! image of its own in the store, found again through the build cache.
//!
//! - [`dockerfile`]: the Dockerfile, parsed by `parse-dockerfile`.
//! - [`lex`]: variable expansion and word splitting, Docker's rules.
//! - [`context`]: the context tar, unpacked safely; `.dockerignore`.
//! - [`pattern`]: `filepath.Match` globs and `.dockerignore` patterns.
//! - [`tree`]: files of layer directories merged as overlayfs shows them.
//! - [`layer`]: layer tars: a `RUN`'s upper directory, `COPY`'s files.
//! - `config`: what the metadata instructions do to the image config.
//! - `copy`: `COPY` and `ADD`.
//! - `run`: `RUN` in a container made by the runtime, as `docker run` makes them.
//!
//! A step's cache key is the sha256 of its parent image's id and what the
//! step does: the instruction after expansion (with the build args a `RUN`
//! sees), and for `COPY`/`ADD` the names, modes, owners and contents of
//! what is copied. A hit reuses the image the step made before, so a
//! rebuild of an unchanged Dockerfile makes no new image at all.

mod config;
pub mod context;
mod copy;
pub mod dockerfile;
mod error;
pub mod layer;
pub mod lex;
pub mod pattern;
mod run;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use error::BuildError;

use crate::images::{BuildImage, ImageId, ImageStore, Reference};
use crate::runtime::Runtime;
use dockerfile::{Dockerfile, Instruction, Kind};
use tree::Tree;

/// What the request asks for (the query of `POST /build`).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub tags: Vec<Reference>,
    /// The Dockerfile's path in the context.
    pub dockerfile: String,
    /// `--build-arg`: a `None` value takes the value from nowhere (unset).
    pub build_args: BTreeMap<String, Option<String>>,
    /// `--label`: added to the final image by a last `LABEL` step.
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    /// Pull every `FROM` image, even one the store has.
    pub pull: bool,
    /// Remove each `RUN`'s container after the build (`rm`, default true).
    pub remove: bool,
    /// Remove them even after a failure (`forcerm`).
    pub force_remove: bool,
    pub quiet: bool,
    /// `networkmode=host`, already allowed by the engine's configuration.
    pub host_network: bool,
    pub target: Option<String>,
    /// Limits for the `RUN` containers.
    pub memory: i64,
    pub memory_swap: i64,
    pub cpu_shares: i64,
    pub nano_cpus: i64,
    pub extra_hosts: Vec<String>,
}

/// The build's output: Docker's JSON messages on the response's channel.
#[derive(Clone)]
pub struct Output {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    quiet: bool,
}

impl Output {
    pub fn new(tx: tokio::sync::mpsc::Sender<Bytes>, quiet: bool) -> Output {
        Output { tx, quiet }
    }

    /// Sends one JSON message (from a blocking thread); false once the
    /// client has gone.
    pub fn send(&self, value: &Value) -> bool {
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.tx.blocking_send(line.into()).is_ok()
    }

    /// A message already encoded (a pull's progress line).
    pub fn send_bytes(&self, line: Bytes) -> bool {
        self.tx.blocking_send(line).is_ok()
    }

    /// `{"stream": text}`, unless the client asked for quiet.
    pub fn stream(&self, text: &str) -> bool {
        if self.quiet {
            return !self.tx.is_closed();
        }
        self.send(&json!({ "stream": text }))
    }

    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Pulls an image a `FROM` or `COPY --from` names (through the registry
/// client, with the request's credentials), showing its progress.
pub trait Puller: Send + Sync {
    fn pull(&self, reference: &Reference, output: &Output) -> Result<(), BuildError>;
}

/// What a build runs with.
pub struct Builder {
    pub images: Arc<ImageStore>,
    pub runtime: Arc<Runtime>,
    pub puller: Box<dyn Puller>,
    pub output: Output,
    /// The build's own directory (context, layer tars); removed after.
    pub work: PathBuf,
}

/// The label on every container a build runs (`docker ps -a` shows them
/// while the build runs); recovery goes by the build's own list, never by
/// a label a caller could set.
pub const BUILD_LABEL: &str = "moat.build";

/// Where builds keep their working directories, under the state root.
pub fn work_root(state_root: &Path) -> PathBuf {
    state_root.join("builds")
}

/// What a stage has while its steps run.
struct Stage {
    image: BuildImage,
    /// `ARG`s declared in this stage, with their values (`None`: no value).
    args: Vec<(String, Option<String>)>,
    /// `CMD` was set in this stage (`ENTRYPOINT` then keeps it).
    cmd_set: bool,
}

impl Stage {
    fn config(&self) -> &Value {
        &self.image.config["config"]
    }

    /// What `$NAME` means here: the args with a value, `ENV` over them.
    fn vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        for entry in env_of(self.config()) {
            if let Some((k, v)) = entry.split_once('=') {
                vars.push((k.to_owned(), v.to_owned()));
            }
        }
        vars
    }

    fn shell(&self) -> Vec<String> {
        string_list(&self.config()["Shell"]).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }
}

fn env_of(config: &Value) -> Vec<String> {
    string_list(&config["Env"]).unwrap_or_default()
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

/// The id the output shows: 12 hex digits.
fn short(id: &ImageId) -> &str {
    id.short()
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Build args Docker lets through without an `ARG`.
const PREDEFINED_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl Builder {
    /// Runs the build over the unpacked context; returns the image id.
    pub fn build(
        &self,
        context_dir: &Path,
        text: &str,
        options: &BuildOptions,
    ) -> Result<ImageId, BuildError> {
        let file = dockerfile::parse(text)?;
        let last = match &options.target {
            Some(target) => file
                .stages
                .iter()
                .position(|s| {
                    matches!(&s.from.kind, Kind::From { name: Some(n), .. } if n.eq_ignore_ascii_case(target))
                })
                .ok_or_else(|| {
                    BuildError::Request(format!(
                        "failed to reach build target {target} in Dockerfile"
                    ))
                })?,
            None => file.stages.len() - 1,
        };
        let label_step = usize::from(!options.labels.is_empty());
        let total: usize = file.stages[..=last]
            .iter()
            .map(|s| s.steps.len() + 1)
            .sum::<usize>()
            + label_step;
        let mut used_args: Vec<String> = Vec::new();
        let global = self.global_args(&file, options, &mut used_args)?;
        let context = Tree::new(vec![context_dir.to_path_buf()], crate::userns::IdMap::HOST);
        let mut done: Vec<(Option<String>, BuildImage)> = Vec::new();
        let mut step = 0;
        for stage_def in &file.stages[..=last] {
            step += 1;
            let from = &stage_def.from;
            self.output
                .stream(&format!("Step {step}/{total} : {}\n", from.text));
            let Kind::From { image, name, flags } = &from.kind else {
                unreachable!("a stage starts with FROM");
            };
            let base = self
                .from(image, flags, &global, &done, options)
                .map_err(|e| step_error(from, e))?;
            if let Some(id) = &base.id {
                self.output.stream(&format!(" ---> {}\n", short(id)));
            }
            if !base.config["config"]["OnBuild"].is_null()
                && base.config["config"]["OnBuild"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty())
            {
                self.output.stream(
                    "[Warning] the base image has ONBUILD triggers; moat does not run them\n",
                );
            }
            let mut stage = Stage {
                image: base,
                args: Vec::new(),
                cmd_set: false,
            };
            for instruction in &stage_def.steps {
                step += 1;
                self.output
                    .stream(&format!("Step {step}/{total} : {}\n", instruction.text));
                if self.output.closed() {
                    return Err(BuildError::Cancelled);
                }
                self.step(
                    &mut stage,
                    instruction,
                    &file,
                    &global,
                    &done,
                    &context,
                    options,
                    &mut used_args,
                )
                .map_err(|e| step_error(instruction, e))?;
                if let Some(id) = &stage.image.id {
                    self.output.stream(&format!(" ---> {}\n", short(id)));
                }
            }
            done.push((name.clone(), stage.image));
        }
        let (_, mut image) = done.swap_remove(last);
        if label_step == 1 {
            step += 1;
            let text = options
                .labels
                .iter()
                .map(|(k, v)| format!("{k:?}={v:?}"))
                .collect::<Vec<_>>()
                .join(" ");
            self.output
                .stream(&format!("Step {step}/{total} : LABEL {text}\n"));
            let mut config = image.config.clone();
            for (k, v) in &options.labels {
                config::set_label(&mut config, k, v);
            }
            image = self.metadata_step(&image, config, &format!("LABEL {text}"), &[], options)?;
            if let Some(id) = &image.id {
                self.output.stream(&format!(" ---> {}\n", short(id)));
            }
        }
        let unused: Vec<&String> = options
            .build_args
            .keys()
            .filter(|k| !used_args.contains(k) && !PREDEFINED_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.output.stream(&format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                names.join(" ")
            ));
        }
        if image.id.is_none() {
            return Err(BuildError::Request(
                "No image was generated. Is your Dockerfile empty?".into(),
            ));
        }
        let id = self.images.build_finish(&image, &options.tags)?;
        self.output
            .send(&json!({ "aux": { "ID": id.to_string() } }));
        if options.quiet {
            // What `docker build -q` prints: the id alone.
            self.output.send(&json!({ "stream": format!("{id}\n") }));
        }
        self.output
            .stream(&format!("Successfully built {}\n", short(&id)));
        for tag in &options.tags {
            self.output
                .stream(&format!("Successfully tagged {}\n", tag.familiar()));
        }
        Ok(id)
    }

    /// The global `ARG`s: their values (a build arg over the default).
    fn global_args(
        &self,
        file: &Dockerfile,
        options: &BuildOptions,
        used: &mut Vec<String>,
    ) -> Result<Vec<(String, Option<String>)>, BuildError> {
        let mut args: Vec<(String, Option<String>)> = Vec::new();
        for instruction in &file.global_args {
            let Kind::Arg(text) = &instruction.kind else {
                continue;
            };
            let vars: Vec<(String, String)> = args
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect();
            for (name, default) in config::arg_defs(text, file.escape, &vars)
                .map_err(|e| step_error(instruction, e))?
            {
                let value = match options.build_args.get(&name) {
                    Some(given) => {
                        used.push(name.clone());
                        given.clone().or(default)
                    }
                    None => default,
                };
                args.retain(|(k, _)| k != &name);
                args.push((name, value));
            }
        }
        Ok(args)
    }

    /// A stage's base: `scratch`, an earlier stage, or an image (pulled
    /// when missing or when `pull` is set).
    fn from(
        &self,
        image: &str,
        flags: &[dockerfile::Flag],
        global: &[(String, Option<String>)],
        done: &[(Option<String>, BuildImage)],
        options: &BuildOptions,
    ) -> Result<BuildImage, BuildError> {
        let vars: Vec<(String, String)> = global
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        for flag in flags {
            match flag.name.as_str() {
                "platform" => {
                    let value = lex::word(flag.value.as_deref().unwrap_or(""), '\\', &vars)
                        .map_err(|e| BuildError::Request(e.to_string()))?;
                    check_platform(&value)?;
                }
                other => {
                    return Err(BuildError::Request(format!(
                        "FROM --{other} is not supported"
                    )));
                }
            }
        }
        let name = lex::word(image, '\\', &vars).map_err(|e| BuildError::Request(e.to_string()))?;
        if name.is_empty() {
            return Err(BuildError::Request("base name should not be blank".into()));
        }
        if name.eq_ignore_ascii_case("scratch") {
            return Ok(BuildImage::scratch());
        }
        if let Some((_, image)) = done
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&name)))
        {
            return Ok(image.clone());
        }
        self.image(&name, options.pull)
    }

    /// An image by reference, pulled when the store does not have it (or
    /// always with `pull`).
    fn image(&self, name: &str, pull: bool) -> Result<BuildImage, BuildError> {
        let reference = Reference::parse(name).map_err(|e| BuildError::Request(e.to_string()))?;
        let local = self.images.build_base(name);
        if !pull && let Ok(image) = local {
            return Ok(image);
        }
        // An id or digest that is not here cannot be pulled by name alone.
        self.puller.pull(&reference, &self.output)?;
        Ok(self.images.build_base(&reference.to_string())?)
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        stage: &mut Stage,
        instruction: &Instruction,
        file: &Dockerfile,
        global: &[(String, Option<String>)],
        done: &[(Option<String>, BuildImage)],
        context: &Tree,
        options: &BuildOptions,
        used_args: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        let escape = file.escape;
        let vars = stage.vars();
        let word = |text: &str| {
            lex::word(text, escape, &vars).map_err(|e| BuildError::Request(e.to_string()))
        };
        let mut config = stage.image.config.clone();
        let nop = |text: &str| format!("#(nop) {text}");
        let shown = instruction.text.clone();
        let (created_by, key_extra): (String, Vec<String>) = match &instruction.kind {
            Kind::Run { command, flags } => {
                if let Some(flag) = flags.first() {
                    return Err(BuildError::Request(format!(
                        "RUN --{} needs BuildKit, which moat does not have",
                        flag.name
                    )));
                }
                stage.image = run::run(self, stage, command, options)?;
                return Ok(());
            }
            Kind::Copy {
                add,
                flags,
                sources,
                dest,
            } => {
                let request = copy::CopyRequest {
                    add: *add,
                    flags,
                    sources,
                    dest,
                    escape,
                    vars: &vars,
                };
                stage.image = copy::copy(self, stage, &request, done, context, options)?;
                return Ok(());
            }
            Kind::Workdir(path) => {
                let path = word(path)?;
                let dir = config::workdir(&mut config, &path)?;
                stage.image = self.workdir_step(stage, config, &dir, options)?;
                return Ok(());
            }
            Kind::Arg(text) => {
                let mut shown_defs = Vec::new();
                for (name, default) in config::arg_defs(text, escape, &vars)? {
                    let inherited = global
                        .iter()
                        .find(|(k, _)| k == &name)
                        .and_then(|(_, v)| v.clone());
                    let value = match options.build_args.get(&name) {
                        Some(given) => {
                            used_args.push(name.clone());
                            given.clone().or(default.clone()).or(inherited)
                        }
                        None => default.clone().or(inherited),
                    };
                    shown_defs.push(match &value {
                        Some(v) => format!("{name}={v}"),
                        None => name.clone(),
                    });
                    stage.args.retain(|(k, _)| k != &name);
                    stage.args.push((name, value));
                }
                (nop(&format!("ARG {text}")), shown_defs)
            }
            Kind::Env(text) => {
                for (k, v) in config::pairs(text, escape, &vars)? {
                    config::set_env(&mut config, &k, &v);
                }
                (
                    nop(&format!(
                        "ENV {}",
                        config::shown_pairs(text, escape, &vars)?
                    )),
                    vec![],
                )
            }
            Kind::Label(text) => {
                for (k, v) in config::pairs(text, escape, &vars)? {
                    config::set_label(&mut config, &k, &v);
                }
                (
                    nop(&format!(
                        "LABEL {}",
                        config::shown_pairs(text, escape, &vars)?
                    )),
                    vec![],
                )
            }
            Kind::User(user) => {
                let user = word(user)?;
                if user.is_empty() {
                    return Err(BuildError::Request("USER requires a user name".into()));
                }
                config["config"]["User"] = json!(user);
                (nop(&format!("USER {user}")), vec![])
            }
            Kind::Cmd(command) => {
                config["config"]["Cmd"] = json!(config::command(command, &stage.shell()));
                stage.cmd_set = true;
                (nop(&shown), vec![])
            }
            Kind::Entrypoint(command) => {
                config["config"]["Entrypoint"] = json!(config::command(command, &stage.shell()));
                if !stage.cmd_set {
                    config["config"]["Cmd"] = Value::Null;
                }
                (nop(&shown), vec![])
            }
            Kind::Shell(shell) => {
                if shell.is_empty() {
                    return Err(BuildError::Request(
                        "SHELL requires at least one argument".into(),
                    ));
                }
                config["config"]["Shell"] = json!(shell);
                (nop(&shown), vec![])
            }
            Kind::Expose(ports) => {
                let mut expanded = Vec::new();
                for port in ports {
                    expanded.extend(
                        lex::words(port, escape, &vars)
                            .map_err(|e| BuildError::Request(e.to_string()))?,
                    );
                }
                config::expose(&mut config, &expanded)?;
                (nop(&format!("EXPOSE {}", expanded.join(" "))), vec![])
            }
            Kind::Volume(paths) => {
                let mut expanded = Vec::new();
                for path in paths {
                    expanded.push(word(path)?);
                }
                config::volumes(&mut config, &expanded)?;
                (nop(&format!("VOLUME {expanded:?}")), vec![])
            }
            Kind::Stopsignal(signal) => {
                let signal = word(signal)?;
                config::stop_signal(&mut config, &signal)?;
                (nop(&format!("STOPSIGNAL {signal}")), vec![])
            }
            Kind::Healthcheck { flags, command } => {
                config::healthcheck(&mut config, flags, command.as_ref())?;
                (nop(&shown), vec![])
            }
            Kind::Maintainer(name) => {
                config["author"] = json!(word(name)?);
                (nop(&shown), vec![])
            }
            Kind::Onbuild(trigger) => {
                let upper = trigger.trim_start().to_ascii_uppercase();
                if upper.starts_with("ONBUILD")
                    || upper.starts_with("FROM")
                    || upper.starts_with("MAINTAINER")
                {
                    return Err(BuildError::Request(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                config::push_onbuild(&mut config, trigger);
                (nop(&shown), vec![])
            }
            Kind::From { .. } => unreachable!("FROM starts a stage"),
        };
        stage.image = self.metadata_step(&stage.image, config, &created_by, &key_extra, options)?;
        Ok(())
    }

    /// A step that changes only the config: one history line, no layer.
    fn metadata_step(
        &self,
        parent: &BuildImage,
        mut config: Value,
        created_by: &str,
        key_extra: &[String],
        options: &BuildOptions,
    ) -> Result<BuildImage, BuildError> {
        let created_by = format!("/bin/sh -c {created_by}");
        let key = cache_key(
            parent,
            "config",
            &[
                &created_by,
                &key_extra.join("\n"),
                &config["config"].to_string(),
            ],
        );
        if let Some(image) = self.cached(&key, options)? {
            return Ok(image);
        }
        config::add_history(&mut config, &created_by, true);
        Ok(self
            .images
            .build_step(&key, config, parent.layers.clone(), None)?)
    }

    /// `WORKDIR`: the config, and a layer with the directory when the
    /// image does not have it.
    fn workdir_step(
        &self,
        stage: &Stage,
        mut config: Value,
        dir: &str,
        options: &BuildOptions,
    ) -> Result<BuildImage, BuildError> {
        let created_by = format!("/bin/sh -c #(nop) WORKDIR {dir}");
        let key = cache_key(
            &stage.image,
            "workdir",
            &[&created_by, &config["config"].to_string()],
        );
        if let Some(image) = self.cached(&key, options)? {
            return Ok(image);
        }
        let map = self.runtime.config().id_map;
        let tree = Tree::new(self.images.build_unpack(&stage.image, &map)?, map);
        let exists = tree
            .resolve(dir, true)
            .ok()
            .and_then(|parts| tree.lookup(&parts))
            .is_some_and(|e| e.is_dir());
        if exists {
            config::add_history(&mut config, &created_by, true);
            return Ok(self
                .images
                .build_step(&key, config, stage.image.layers.clone(), None)?);
        }
        let tar_path = self.work.join(format!("layer-{}.tar", random_hex()));
        let mut tar = layer::LayerTar::create(&tar_path)?;
        copy::make_dirs(&tree, dir, (0, 0), &mut tar)?;
        tar.finish()?;
        config::add_history(&mut config, &created_by, false);
        let image =
            self.images
                .build_step(&key, config, stage.image.layers.clone(), Some(&tar_path));
        let _ = std::fs::remove_file(&tar_path);
        Ok(image?)
    }

    /// The cached result of `key`, announced, unless the cache is off.
    fn cached(&self, key: &str, options: &BuildOptions) -> Result<Option<BuildImage>, BuildError> {
        if options.no_cache {
            return Ok(None);
        }
        let found = self.images.build_cached(key)?;
        if found.is_some() {
            self.output.stream(" ---> Using cache\n");
        }
        Ok(found)
    }
}

/// A step's cache key: its parent and what it does.
fn cache_key(parent: &BuildImage, kind: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"moat-build-v1\0");
    hasher.update(
        parent
            .id
            .as_ref()
            .map_or("scratch".to_owned(), |id| id.to_string())
            .as_bytes(),
    );
    hasher.update(b"\0");
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update(b"\0");
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A step's error, naming its line.
fn step_error(instruction: &Instruction, e: BuildError) -> BuildError {
    match e {
        BuildError::Request(message)
        | BuildError::Engine(message)
        | BuildError::Context(message) => BuildError::Step {
            line: instruction.line,
            instruction: instruction.text.clone(),
            message,
        },
        other => other,
    }
}

/// Only this host's platform can be built (no emulation).
pub fn check_platform(platform: &str) -> Result<(), BuildError> {
    let platform = platform.trim().to_ascii_lowercase();
    if platform.is_empty() {
        return Ok(());
    }
    let host = format!("linux/{}", crate::images::host_architecture());
    let ok =
        platform == host || platform == "linux" || platform == crate::images::host_architecture();
    if ok {
        Ok(())
    } else {
        Err(BuildError::Request(format!(
            "building for platform {platform} is not supported: this engine builds for {host} only"
        )))
    }
}

pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses Docker's `buildargs` JSON (`{"A":"1","B":null}`).
pub fn parse_build_args(json: &str) -> Result<BTreeMap<String, Option<String>>, BuildError> {
    if json.trim().is_empty() || json.trim() == "null" {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(json).map_err(|e| BuildError::Request(format!("buildargs: {e}")))
}

/// Parses Docker's `labels` JSON (`{"k":"v"}`).
pub fn parse_labels(json: &str) -> Result<BTreeMap<String, String>, BuildError> {
    if json.trim().is_empty() || json.trim() == "null" {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(json).map_err(|e| BuildError::Request(format!("labels: {e}")))
}

/// The file of a build's working directory that lists its `RUN`
/// containers, one id a line, written before each is started.
const CONTAINERS_FILE: &str = "containers";

/// Notes a `RUN` container in the build's directory, so that a restarted
/// engine removes it if this one dies first.
fn note_container(work: &Path, id: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join(CONTAINERS_FILE))
    {
        let _ = writeln!(file, "{id}");
    }
}

/// Removes what builds of an engine that died left: the `RUN` containers
/// their directories list, then the directories.
pub fn recover(runtime: &Runtime, state_root: &Path) {
    let root = work_root(state_root);
    let Ok(builds) = std::fs::read_dir(&root) else {
        return;
    };
    for build in builds.flatten() {
        let listed =
            std::fs::read_to_string(build.path().join(CONTAINERS_FILE)).unwrap_or_default();
        for id in listed.lines().filter(|l| !l.is_empty()) {
            let _ = runtime.remove(id, true);
        }
        let _ = std::fs::remove_dir_all(build.path());
    }
}

/// The unpacked layers of a stage's image, as a tree.
fn image_tree(builder: &Builder, image: &BuildImage) -> Result<Tree, BuildError> {
    let map = builder.runtime.config().id_map;
    Ok(Tree::new(builder.images.build_unpack(image, &map)?, map))
}

/// A per-build map of stage images by name or index, for `COPY --from`.
fn stage_by_name<'a>(
    done: &'a [(Option<String>, BuildImage)],
    name: &str,
) -> Option<&'a BuildImage> {
    if let Ok(index) = name.parse::<usize>() {
        return done.get(index).map(|(_, image)| image);
    }
    done.iter()
        .rev()
        .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|(_, image)| image)
}
