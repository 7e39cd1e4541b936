//! A Docker-Engine-API-compatible daemon on a Unix socket that runs
//! containers in user namespaces with Docker's default hardening, one
//! single-threaded shim per container (youki's `libcontainer` inside).
//!
//! - [`config`]: a container's configuration in Docker's JSON shape.
//! - [`caps`], [`seccomp`]: Docker's default capability set and seccomp
//!   profile, resolved per container.
//! - [`spec`]: a configuration → the OCI runtime spec, checked field by field.
//! - [`userns`]: the subordinate id range containers run as.
//! - [`error`]: what can go wrong, naming the field, path or id.

pub mod caps;
pub mod config;
pub mod error;
pub mod seccomp;
pub mod spec;
pub mod userns;
