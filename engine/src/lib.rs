//! A Docker-Engine-API-compatible daemon on a Unix socket that runs
//! containers in user namespaces with Docker's default hardening, one
//! single-threaded shim per container (youki's `libcontainer` inside).
//!
//! - [`caps`], [`seccomp`]: Docker's default capability set and seccomp
//!   profile, resolved per container.
//! - [`spec`]: a configuration → the OCI runtime spec, checked field by field.
//! - [`userns`]: the subordinate id range containers run as.
//! - [`cgroups`]: a container's v1 cgroups, made and joined by moat.
//! - [`server`]: the Docker Engine API on a Unix socket.
//! - [`images`]: the image store (OCI layout, unpacked layers per remap root).
//! - [`registry`]: a client of the OCI distribution API (pull, push, login).
//! - [`build`]: `docker build` (the classic builder): Dockerfile, context, cache.
//! - [`runtime`]: the container store and lifecycle, through the shims.
//! - [`shim`]: the per-container process that runs it with libcontainer.
//! - [`logs`]: Docker's json-file log format.
//! - [`busybox`]: a root filesystem from the host's busybox-static.
//! - [`error`]: what can go wrong, naming the field, path or id.

#![recursion_limit = "256"]

pub mod build;
pub mod busybox;
pub mod caps;
pub mod cgroups;
pub mod error;
mod fsutil;
pub mod images;
pub mod logs;
pub mod registry;
pub mod runtime;
pub mod seccomp;
pub mod server;
pub mod shim;
pub mod spec;
pub mod userns;
