//! The only network-facing process: terminates mutual TLS, fixes the
//! caller's identity per connection, classifies and authorizes every Docker
//! API call (including what is inside its body), writes a tamper-evident
//! audit record, and forwards the call to the engine's Unix socket.
//!
//! Filled in by the gateway work; today it holds nothing.
