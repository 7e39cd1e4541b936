//! `RUN`: a container made and started by the runtime exactly as `docker
//! run` makes one (the same spec: user namespace, Docker's capabilities
//! and seccomp profile, masked paths, loopback-only network unless the
//! build may use the host's), its output streamed to the client, and
//! the changes it left in its overlayfs upper directory made a layer.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use moat_api::container::ContainerConfig;
use serde_json::Value;

use super::dockerfile::Command;
use super::error::BuildError;
use super::layer::{self, LayerTar};
use super::{BUILD_LABEL, BuildOptions, Builder, Stage, cache_key, config};
use crate::images::BuildImage;
use crate::runtime::CreateRequest;
use crate::shim::protocol::AttachHeader;

pub fn run(
    builder: &Builder,
    stage: &Stage,
    command: &Command,
    options: &BuildOptions,
) -> Result<BuildImage, BuildError> {
    let shell = stage.shell();
    let args = config::command(command, &shell);
    // Build args reach the command as environment, not the image.
    let env = super::env_of(stage.config());
    let set = |name: &str| env.iter().any(|e| e.split('=').next() == Some(name));
    let mut build_args: Vec<String> = stage
        .args
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .filter(|kv| !set(kv.split('=').next().unwrap_or_default()))
        .collect();
    build_args.sort();
    let created_by = if build_args.is_empty() {
        args.join(" ")
    } else {
        format!(
            "|{} {} {}",
            build_args.len(),
            build_args.join(" "),
            args.join(" ")
        )
    };
    let key = cache_key(
        &stage.image,
        "run",
        &[&created_by, &stage.config().to_string()],
    );
    if let Some(image) = builder.cached(&key, options)? {
        return Ok(image);
    }
    let image_id = stage
        .image
        .id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let mut config = ContainerConfig {
        image: image_id.clone(),
        cmd: args.clone(),
        env: env.iter().cloned().chain(build_args).collect(),
        working_dir: stage.config()["WorkingDir"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        user: stage.config()["User"].as_str().unwrap_or("").to_owned(),
        ..ContainerConfig::default()
    };
    config.labels.insert(BUILD_LABEL.into(), "1".into());
    let host = &mut config.host_config;
    host.network_mode = if options.host_network { "host" } else { "none" }.into();
    host.memory = options.memory;
    host.memory_swap = options.memory_swap;
    host.cpu_shares = options.cpu_shares;
    host.nano_cpus = options.nano_cpus;
    host.extra_hosts = options.extra_hosts.clone();
    let map = builder.runtime.config().id_map;
    let layers = builder.images.build_unpack(&stage.image, &map)?;
    if layers.is_empty() {
        return Err(BuildError::Request(
            "RUN needs a base image with a shell: this stage starts from scratch and has no files"
                .into(),
        ));
    }
    let record = builder.runtime.create(CreateRequest {
        name: None,
        config,
        image: image_id.clone(),
        image_id,
        layers,
    })?;
    let id = record.id;
    super::note_container(&builder.work, &id);
    builder
        .output
        .stream(&format!(" ---> Running in {}\n", &id[..12]));
    let outcome = run_container(builder, &id, &args);
    let result = outcome.and_then(|()| commit(builder, stage, &id, &key, &created_by));
    // Unlike dockerd, a failed step's container goes too (as with
    // `--force-rm`), so a failed build leaves nothing; `--rm=false` keeps
    // them all.
    if options.remove || options.force_remove {
        let _ = builder.runtime.remove(&id, true);
        if result.is_ok() {
            builder
                .output
                .stream(&format!("Removing intermediate container {}\n", &id[..12]));
        }
    }
    result
}

/// Starts the container, relays its output, and waits for its exit; a
/// client that goes away kills it.
fn run_container(builder: &Builder, id: &str, args: &[String]) -> Result<(), BuildError> {
    let header = AttachHeader {
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let mut streams = builder.runtime.start(id, &[header])?;
    let mut stream = streams
        .pop()
        .ok_or_else(|| BuildError::Engine("the container's output could not be attached".into()))?;
    let relayed = relay(&mut stream, builder);
    if relayed.is_err() {
        let _ = builder.runtime.kill(id, libc::SIGKILL);
    }
    let status = builder.runtime.wait(id)?;
    relayed?;
    if !status.error.is_empty() {
        return Err(BuildError::Request(format!(
            "The command '{}' could not run: {}",
            args.join(" "),
            status.error
        )));
    }
    if status.exit_code != 0 {
        return Err(BuildError::Request(format!(
            "The command '{}' returned a non-zero code: {}",
            args.join(" "),
            status.exit_code
        )));
    }
    Ok(())
}

/// Relays Docker's 8-byte frames as `{"stream": ...}` until the end.
fn relay(stream: &mut UnixStream, builder: &Builder) -> Result<(), BuildError> {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if builder.output.closed() {
                    return Err(BuildError::Cancelled);
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let mut start = 0;
        while pending.len() - start >= 8 {
            let len = u32::from_be_bytes([
                pending[start + 4],
                pending[start + 5],
                pending[start + 6],
                pending[start + 7],
            ]) as usize;
            if pending.len() - start < 8 + len {
                break;
            }
            let payload = &pending[start + 8..start + 8 + len];
            if !builder.output.stream(&String::from_utf8_lossy(payload)) {
                return Err(BuildError::Cancelled);
            }
            start += 8 + len;
        }
        pending.drain(..start);
    }
    Ok(())
}

/// The container's changes as a layer over the stage's image.
fn commit(
    builder: &Builder,
    stage: &Stage,
    id: &str,
    key: &str,
    created_by: &str,
) -> Result<BuildImage, BuildError> {
    let upper = builder.runtime.state_dir(id).join("upper");
    let map = builder.runtime.config().id_map;
    let tar_path = builder.work.join(format!("layer-{id}.tar"));
    let result = (|| {
        let mut tar = LayerTar::create(&tar_path)?;
        layer::diff_upper(&upper, &map, &mut tar)?;
        tar.finish()?;
        let mut config: Value = stage.image.config.clone();
        config::add_history(&mut config, created_by, false);
        Ok(builder
            .images
            .build_step(key, config, stage.image.layers.clone(), Some(&tar_path))?)
    })();
    let _ = std::fs::remove_file(&tar_path);
    result
}
