//! The Docker Engine API as moat speaks it: request and response types, and
//! the one route table (method + path → typed action and object) that both
//! the engine's router and the gateway's classifier are built from, so the
//! two can never understand a request differently.
//!
//! This crate depends on no other moat crate. It is filled in by the engine
//! API and gateway work; today it holds nothing.
