//! A Docker-Engine-API-compatible daemon on a Unix socket that runs
//! containers in user namespaces with Docker's default hardening, one
//! single-threaded shim per container (youki's `libcontainer` inside).
//!
//! Filled in by the engine work; today it holds nothing.
