//! The two kinds of line in an audit log: an event (one per call, or two
//! for a call with a "started" record) and a checkpoint (signed by the
//! writer). Both carry the chain fields `seq` and `prev` first, so a line's
//! place in the chain can be read without understanding the rest of it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One audited call, or one stage of it. The gateway fills everything but
/// `seq`, `prev` and `kind`, which the writer sets.
///
/// Modelled on Kubernetes' audit Event. `None` fields are left out of the
/// line; see docs/audit.md for each field's meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log: the first record is 1, each next one +1, across
    /// rotated files. Set by the writer.
    pub seq: u64,
    /// Hex SHA-256 of the previous line's exact bytes (without its newline);
    /// 64 zeros for the first record of a log. Set by the writer.
    pub prev: String,
    /// Always [`Kind::Event`] for a record; set by the writer.
    pub kind: Kind,
    /// The call's id, the same on its "started" and "completed" records.
    pub audit_id: String,
    pub stage: Stage,
    /// When the stage happened (UTC, microseconds).
    #[serde(with = "rfc3339_micros")]
    pub time: OffsetDateTime,
    pub level: Level,
    /// The caller: the certificate's CN (or the JWT subject).
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    /// Hex SHA-256 of the client certificate's DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    /// The peer's address (`IP:PORT`).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub method: String,
    /// The path as requested (before normalization), with its query.
    pub path: String,
    /// The classified action, e.g. `container.create`; absent when the
    /// request could not be classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The object the action targets (container name or id, image, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub decision: Decision,
    /// Why, in words, when the call was denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every permission the call needed, with the decision on each.
    #[serde(default)]
    pub requirements: Vec<RequirementOutcome>,
    /// The HTTP status sent to the client (completed stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// The request body at level "request", already redacted by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// What a candidate policy in dry run (`STATE/policy/dry-run/`) would
    /// have decided, when it differs from the running one:
    /// `{"allowed": false, "denied": ["host.bind:/srv (default deny)", ...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<serde_json::Value>,
}

impl Default for Record {
    /// An empty record stamped with the current time, for struct-update
    /// syntax: `Record { user, method, path, ..Record::default() }`.
    fn default() -> Record {
        Record {
            seq: 0,
            prev: String::new(),
            kind: Kind::Event,
            audit_id: String::new(),
            stage: Stage::Completed,
            time: OffsetDateTime::now_utc(),
            level: Level::Metadata,
            user: String::new(),
            groups: Vec::new(),
            auth: Auth::None,
            cert_serial: None,
            cert_fingerprint: None,
            source: String::new(),
            user_agent: None,
            method: String::new(),
            path: String::new(),
            action: None,
            object: None,
            decision: Decision::Deny,
            reason: None,
            requirements: Vec::new(),
            status: None,
            bytes_in: None,
            bytes_out: None,
            duration_us: None,
            request: None,
            dry_run: None,
        }
    }
}

/// One permission a call needed and what policy said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementOutcome {
    /// e.g. `container.privileged`, `host.bind`, `image.use`.
    pub permission: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub allowed: bool,
    /// The policy rule that decided it (or the default deny).
    pub rule: String,
}

/// The writer's signed statement that the chain up to `seq - 1` ends in
/// the hash `prev`. See [`crate::chain::checkpoint_message`] for the bytes
/// signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// The hash of the last line it covers: the chain head.
    pub prev: String,
    /// Always [`Kind::Checkpoint`].
    pub kind: Kind,
    #[serde(with = "rfc3339_micros")]
    pub time: OffsetDateTime,
    /// Records since the previous checkpoint (the records this one adds).
    pub count: u64,
    /// Id of the signing key: hex of the first 8 bytes of the SHA-256 of
    /// its SubjectPublicKeyInfo DER.
    pub key: String,
    /// What the writer saw since the previous checkpoint that an auditor
    /// should know: a torn line removed on reopen, appends that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Hex Ed25519 signature over the checkpoint message.
    pub sig: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Event,
    Checkpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Written before a long-running or hijacked call is forwarded.
    Started,
    /// Written when the call is answered (or refused).
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Who, what, the decision and the outcome.
    Metadata,
    /// Metadata plus the (redacted) request body.
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    Mtls,
    Jwt,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    /// The call was allowed but could not be completed (engine unreachable,
    /// audit failure, ...), or could not be decided.
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Started => "started",
            Stage::Completed => "completed",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Decision, String> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "error" => Ok(Decision::Error),
            _ => Err(format!("{s:?}: expected allow, deny or error")),
        }
    }
}

/// A parsed line of either kind.
// Nearly every line is an event: boxing the large variant would only add an
// allocation to the common case.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Event(Record),
    Checkpoint(Checkpoint),
}

impl Entry {
    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Entry, serde_json::Error> {
        #[derive(Deserialize)]
        struct KindOnly {
            kind: Kind,
        }
        Ok(match serde_json::from_slice::<KindOnly>(line)?.kind {
            Kind::Event => Entry::Event(serde_json::from_slice(line)?),
            Kind::Checkpoint => Entry::Checkpoint(serde_json::from_slice(line)?),
        })
    }

    pub fn seq(&self) -> u64 {
        match self {
            Entry::Event(r) => r.seq,
            Entry::Checkpoint(c) => c.seq,
        }
    }
}

/// Times are written in UTC with microseconds (`2026-05-01T12:00:00.123456Z`),
/// always the same width, so they sort as text; any RFC 3339 time is read.
pub mod rfc3339_micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn format(t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }

    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339)
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::format(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?
                .map(|s| super::parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_fields_are_left_out_and_chain_fields_come_first() {
        let record = Record {
            audit_id: "a1".into(),
            time: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap(),
            user: "alice".into(),
            source: "10.0.0.1:5000".into(),
            method: "GET".into(),
            path: "/_ping".into(),
            decision: Decision::Allow,
            ..Record::default()
        };
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            line.starts_with(r#"{"seq":0,"prev":"","kind":"event","#),
            "{line}"
        );
        assert!(
            line.contains(r#""time":"2023-11-14T22:13:20.123456Z""#),
            "{line}"
        );
        for absent in ["cert_serial", "action", "status", "request", "reason"] {
            assert!(!line.contains(absent), "{absent} in {line}");
        }
        let back = Entry::parse(line.as_bytes()).unwrap();
        let mut expected = record.clone();
        expected.time =
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000).unwrap();
        assert_eq!(back, Entry::Event(expected));
    }

    #[test]
    fn times_read_with_any_offset_are_written_in_utc() {
        let t = rfc3339_micros::parse("2026-01-02T03:04:05.5+02:00").unwrap();
        assert_eq!(rfc3339_micros::format(t), "2026-01-02T01:04:05.500000Z");
    }
}
