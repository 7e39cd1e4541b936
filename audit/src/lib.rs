//! moat's audit log: one JSON line per audited call, in a SHA-256 hash
//! chain that continues across rotated files, with Ed25519-signed
//! checkpoints, written durably by group commit. The gateway appends; the
//! `moat audit` commands verify, search and export. The schema and the
//! guarantees are in docs/audit.md.
//!
//! - [`record`]: the line types ([`Record`], [`Checkpoint`]), the schema.
//! - [`chain`]: hashing, what a checkpoint signs, file names.
//! - [`key`]: the audit key ([`Signer`], [`PublicKey`]).
//! - [`writer`]: [`AuditLog`], the group-commit writer (fail closed).
//! - [`verify`]: [`verify()`] a log and name the first bad line.
//! - [`read`]: filtered reading and following, for search, tail and export.

pub mod chain;
mod error;
pub mod key;
pub mod read;
pub mod record;
mod segment;
pub mod verify;
pub mod writer;

pub use error::{AuditError, KeyError};
pub use key::{PublicKey, Signer};
pub use read::{Filter, Follower, Line, ReadError, lines};
pub use record::{
    Auth, Checkpoint, Decision, Entry, Kind, Level, Record, RequirementOutcome, Stage,
};
pub use verify::{Fault, Location, Report, VerifyError, VerifyOptions, verify, verify_with};
pub use writer::{Appended, AuditLog, Options, Status};
