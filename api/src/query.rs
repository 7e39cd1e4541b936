//! The query string, read one way for the gateway and the engine alike.
//!
//! Parsed as Go's `url.ParseQuery` reads it for dockerd: `&`-separated
//! `key=value` pairs, `+` as a space, one percent-decoding pass. A `;` is
//! refused (Go stopped accepting it as a separator: two parsers that
//! disagree on it would see different parameters), and so is invalid
//! percent-encoding.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid query: ';' is not a parameter separator")]
    Semicolon,
    #[error("invalid query: bad percent-encoding in {0:?}")]
    BadEncoding(String),
    #[error("invalid value for {key}: {value:?} is not {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// Parameters in the order given; a key may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, QueryError> {
        let mut pairs = Vec::new();
        let Some(raw) = raw else {
            return Ok(Query { pairs });
        };
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            if part.contains(';') {
                return Err(QueryError::Semicolon);
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query { pairs })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// dockerd's `BoolValue`: absent, empty, `0`, `no`, `false` or `none`
    /// are false; anything else is true.
    pub fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// An integer parameter; absent or empty is `None`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, QueryError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| QueryError::BadValue {
                key: key.to_owned(),
                value: v.to_owned(),
                expected: "an integer",
            }),
        }
    }

    /// Docker's `filters` parameter: JSON `{"key":{"value":true}}` or the
    /// older `{"key":["value"]}`.
    pub fn filters(&self) -> Result<BTreeMap<String, Vec<String>>, QueryError> {
        let Some(raw) = self.get("filters").filter(|v| !v.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let bad = || QueryError::BadValue {
            key: "filters".into(),
            value: raw.to_owned(),
            expected: "a JSON object of filters",
        };
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|_| bad())?;
        let object = value.as_object().ok_or_else(bad)?;
        let mut out = BTreeMap::new();
        for (key, values) in object {
            let list: Vec<String> = match values {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
                _ => return Err(bad()),
            };
            out.insert(key.clone(), list);
        }
        Ok(out)
    }
}

fn decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::BadEncoding(s.to_owned()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::BadEncoding(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_go() {
        let q = Query::parse(Some("name=web&all=1&x=a+b%2Fc&all=0&flag")).unwrap();
        assert_eq!(q.get("name"), Some("web"));
        assert_eq!(q.get("x"), Some("a b/c"));
        assert!(q.bool("all"));
        assert!(!q.bool("flag") && !q.bool("missing"));
        assert_eq!(q.get_all("all").collect::<Vec<_>>(), vec!["1", "0"]);
    }

    #[test]
    fn refuses_what_parsers_disagree_on() {
        assert_eq!(Query::parse(Some("a=1;b=2")), Err(QueryError::Semicolon));
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%e2")).is_err());
    }

    #[test]
    fn filters_in_both_forms() {
        let q = Query::parse(Some("filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D")).unwrap();
        assert_eq!(q.filters().unwrap()["label"], vec!["a=b"]);
        let q = Query::parse(Some(r#"filters={"status":["running"]}"#)).unwrap();
        assert_eq!(q.filters().unwrap()["status"], vec!["running"]);
        assert!(
            Query::parse(Some("filters=[1]"))
                .unwrap()
                .filters()
                .is_err()
        );
    }
}
