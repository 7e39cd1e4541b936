//! `/_ping`, `/version`, `/info`, `/system/df`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::{ApiResult, Engine, blocking, json};
use crate::runtime::StateName;

pub fn ping() -> ApiResult {
    let mut response = Response::new(Body::from("OK"));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    // The classic builder: no BuildKit session is offered.
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    Ok(response)
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn version() -> ApiResult {
    let version = env!("CARGO_PKG_VERSION");
    Ok(json(
        StatusCode::OK,
        &json!({
            "Platform": { "Name": "moat" },
            "Components": [{
                "Name": "Engine",
                "Version": version,
                "Details": {
                    "ApiVersion": moat_api::MAX_API_VERSION,
                    "MinAPIVersion": moat_api::MIN_API_VERSION,
                    "Os": "linux",
                    "Arch": arch(),
                    "KernelVersion": kernel_version(),
                },
            }],
            "Version": version,
            "ApiVersion": moat_api::MAX_API_VERSION,
            "MinAPIVersion": moat_api::MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": arch(),
            "KernelVersion": kernel_version(),
            "BuildTime": "",
        }),
    ))
}

pub async fn info(engine: Arc<Engine>) -> ApiResult {
    let engine2 = engine.clone();
    let (total, running, paused, stopped, images) = blocking(move || {
        let containers = engine2.runtime.list()?;
        let (mut running, mut paused) = (0, 0);
        for c in &containers {
            match engine2.runtime.state(&c.id).map(|s| s.status) {
                Ok(StateName::Running) => running += 1,
                Ok(StateName::Paused) => paused += 1,
                _ => {}
            }
        }
        let images = engine2.images.list()?.len();
        Ok((
            containers.len(),
            running,
            paused,
            containers.len() - running - paused,
            images,
        ))
    })
    .await?;
    let config = engine.runtime.config();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
        })
        .unwrap_or(0)
        * 1024;
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": hostname,
            "Containers": total,
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": stopped,
            "Images": images,
            "Driver": "overlay",
            "DriverStatus": [["Backing Filesystem", "overlayfs layers per user-namespace remap root"]],
            "Plugins": { "Volume": ["local"], "Network": ["null", "host"], "Authorization": null, "Log": ["json-file"] },
            "MemoryLimit": true,
            "SwapLimit": true,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "PidsLimit": true,
            "OomKillDisable": false,
            "IPv4Forwarding": false,
            "Debug": false,
            "NFd": 0,
            "NGoroutines": 0,
            "SystemTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "NEventsListener": 0,
            "KernelVersion": kernel_version(),
            "OperatingSystem": os_name(),
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "MemTotal": mem_total,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": { "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": [] },
            "DockerRootDir": config.state_root,
            "Name": hostname,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": { "moat": { "path": "libcontainer" } },
            "DefaultRuntime": "moat",
            "Swarm": { "LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": "" },
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": crate::spec::INIT_BINARY,
            "SecurityOptions": [
                "name=seccomp,profile=builtin",
                format!("name=userns"),
                "name=cgroupns",
            ],
            "Warnings": [],
        }),
    ))
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

pub async fn df(engine: Arc<Engine>) -> ApiResult {
    let engine2 = engine.clone();
    let images = blocking(move || Ok(engine2.images.list()?)).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "LayersSize": images.iter().map(|i| i.size).sum::<u64>(),
            "Images": images.iter().map(|i| json!({
                "Id": i.id.to_string(), "RepoTags": i.repo_tags, "Size": i.size, "Created": i.created.map_or(0, |t| t.unix_timestamp()), "Containers": -1,
            })).collect::<Vec<_>>(),
            "Containers": [],
            "Volumes": [],
            "BuildCache": [],
        }),
    ))
}
