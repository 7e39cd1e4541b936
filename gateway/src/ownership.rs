//! Who owns a container: the gateway stamps `moat.owner=<user>` into every
//! container a caller creates, narrows lists (and prunes and events) to the
//! caller's own containers unless they hold `container.any`, and looks up
//! the owner of the container a per-object call names.

use bytes::Bytes;
use moat_api::query::Query;
use serde_json::{Map, Value};

/// The label that records a container's owner.
pub const OWNER_LABEL: &str = "moat.owner";

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("the label {OWNER_LABEL} is set by the gateway, not by callers")]
    Forged,
}

/// The create body with `Labels["moat.owner"] = user` added. A body that
/// already names a different owner is refused; naming the caller is a
/// no-op (a config copied from `docker inspect` of one's own container).
pub fn stamp_owner(body: &[u8], user: &str) -> Result<Bytes, OwnerError> {
    let mut document: Value =
        serde_json::from_slice(body).map_err(|e| OwnerError::Json(e.to_string()))?;
    let object = document
        .as_object_mut()
        .ok_or_else(|| OwnerError::Json("the body is not a JSON object".into()))?;
    let labels = object
        .entry("Labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if labels.is_null() {
        *labels = Value::Object(Map::new());
    }
    let labels = labels
        .as_object_mut()
        .ok_or_else(|| OwnerError::Json("Labels is not an object".into()))?;
    match labels.get(OWNER_LABEL) {
        Some(Value::String(owner)) if owner == user => {}
        Some(_) => return Err(OwnerError::Forged),
        None => {
            labels.insert(OWNER_LABEL.into(), Value::String(user.into()));
        }
    }
    serde_json::to_vec(&document)
        .map(Bytes::from)
        .map_err(|e| OwnerError::Json(e.to_string()))
}

/// The query string with `label=moat.owner=<user>` added to its filters,
/// so the engine answers only with the caller's containers. Docker ANDs
/// label filters, so the caller's own filters still apply within that.
pub fn narrow_query(query: &Query, raw: Option<&str>, user: &str) -> Result<String, String> {
    let mut filters = query.filters().map_err(|e| e.to_string())?;
    filters
        .entry("label".to_owned())
        .or_default()
        .push(format!("{OWNER_LABEL}={user}"));
    let filters = serde_json::to_string(&filters).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let key = part.split_once('=').map_or(part, |(k, _)| k);
        if key == "filters" {
            continue;
        }
        out.push_str(part);
        out.push('&');
    }
    out.push_str("filters=");
    out.push_str(&encode(&filters));
    Ok(out)
}

/// The query string with every `key=...` replaced by one `key=value`.
pub fn replace_param(raw: Option<&str>, key: &str, value: &str) -> String {
    let mut out = String::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if part.split_once('=').map_or(part, |(k, _)| k) != key {
            out.push_str(part);
            out.push('&');
        }
    }
    out.push_str(key);
    out.push('=');
    out.push_str(&encode(value));
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A container as the engine names it: its full id and owner label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub id: String,
    pub owner: Option<String>,
}

impl Owned {
    /// Reads `GET /containers/{name}/json`.
    pub fn from_inspect(inspect: &Value) -> Option<Owned> {
        let id = inspect["Id"].as_str()?.to_owned();
        let owner = inspect["Config"]["Labels"][OWNER_LABEL]
            .as_str()
            .map(str::to_owned);
        Some(Owned { id, owner })
    }

    pub fn is_owned_by(&self, user: &str) -> bool {
        self.owner.as_deref() == Some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_adds_the_owner_and_refuses_a_forged_one() {
        let stamped = stamp_owner(br#"{"Image":"busybox"}"#, "alice").unwrap();
        let value: Value = serde_json::from_slice(&stamped).unwrap();
        assert_eq!(value["Labels"][OWNER_LABEL], "alice");

        let stamped = stamp_owner(br#"{"Image":"b","Labels":null}"#, "alice").unwrap();
        let value: Value = serde_json::from_slice(&stamped).unwrap();
        assert_eq!(value["Labels"][OWNER_LABEL], "alice");

        let same = br#"{"Image":"b","Labels":{"moat.owner":"alice","x":"y"}}"#;
        let value: Value = serde_json::from_slice(&stamp_owner(same, "alice").unwrap()).unwrap();
        assert_eq!(value["Labels"]["x"], "y");

        for forged in [
            &br#"{"Labels":{"moat.owner":"bob"}}"#[..],
            br#"{"Labels":{"moat.owner":1}}"#,
        ] {
            assert!(matches!(
                stamp_owner(forged, "alice"),
                Err(OwnerError::Forged)
            ));
        }
        assert!(stamp_owner(br#"{"Labels":[]}"#, "alice").is_err());
        assert!(stamp_owner(b"[]", "alice").is_err());
    }

    #[test]
    fn a_parameter_is_replaced_once() {
        let out = replace_param(
            Some("repo=a&container=web&container=x&tag=1"),
            "container",
            "abc",
        );
        assert_eq!(out, "repo=a&tag=1&container=abc");
        assert_eq!(replace_param(None, "container", "a b"), "container=a%20b");
    }

    #[test]
    fn narrowing_keeps_other_parameters_and_ands_the_owner_label() {
        let raw = "all=1&filters=%7B%22label%22%3A%5B%22app%3Dweb%22%5D%7D&size=0";
        let query = Query::parse(Some(raw)).unwrap();
        let narrowed = narrow_query(&query, Some(raw), "alice").unwrap();
        let reparsed = Query::parse(Some(&narrowed)).unwrap();
        assert_eq!(reparsed.get("all"), Some("1"));
        assert_eq!(reparsed.get("size"), Some("0"));
        let filters = reparsed.filters().unwrap();
        assert_eq!(filters["label"], vec!["app=web", "moat.owner=alice"]);
        assert_eq!(reparsed.get_all("filters").count(), 1);

        let narrowed = narrow_query(&Query::default(), None, "bob").unwrap();
        let filters = Query::parse(Some(&narrowed)).unwrap().filters().unwrap();
        assert_eq!(filters["label"], vec!["moat.owner=bob"]);
    }
}
