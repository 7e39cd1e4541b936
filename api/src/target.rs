//! Reading a request-target the one way moat reads it: split off the query,
//! percent-decode each path segment exactly once, and refuse anything that
//! two readers could understand differently (encoded slashes, dot segments,
//! empty segments, a trailing slash) instead of normalizing it.

/// The longest path (the request-target up to `?`) accepted, in bytes.
/// Real paths are short: the longest names in them are image references.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// The longest query string accepted, in bytes. Longer than the path cap
/// because `filters`, `buildargs` and `labels` carry JSON.
pub const MAX_QUERY_LEN: usize = 64 * 1024;

/// A request-target that passed every rule, split into decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    /// The path as received, still encoded: printable ASCII, so it is safe
    /// to echo in an error message.
    pub raw_path: &'a str,
    /// The path's segments, each percent-decoded once. Empty for `/`.
    pub segments: Vec<String>,
    /// The query as received, without the `?`; `None` when there was no `?`.
    pub query: Option<&'a str>,
}

/// Why a request-target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Absolute-form (`http://host/...`), authority-form and `*` targets are
    /// for proxies; the gateway passes the path and query of the URI.
    #[error("the request target must be a path starting with '/'")]
    NotOriginForm,

    #[error("the request path is {len} bytes long; moat accepts at most {limit}")]
    PathTooLong { len: usize, limit: usize },

    #[error("the query string is {len} bytes long; moat accepts at most {limit}")]
    QueryTooLong { len: usize, limit: usize },

    /// A byte RFC 3986 does not allow unencoded in a path (a space, a
    /// quote, a backslash, `#`, a control character, anything not ASCII).
    #[error("the request path has {} at byte {at}; it must be percent-encoded", describe(.byte))]
    UnencodedCharacter { at: usize, byte: u8 },

    #[error("the query string has {} at byte {at}; it must be percent-encoded", describe(.byte))]
    UnencodedQueryCharacter { at: usize, byte: u8 },

    #[error(
        "the request path has an invalid percent-encoding at byte {at}: '%' must be followed by two hex digits"
    )]
    InvalidPercentEncoding { at: usize },

    /// A percent-encoded byte that would change how the path splits or
    /// reads once decoded: `/`, `?`, `#`, NUL or another control character.
    #[error("the request path encodes {what} as {sequence}, which a path segment may not contain")]
    ForbiddenEncoding {
        sequence: String,
        what: &'static str,
    },

    #[error("the request path does not percent-decode to UTF-8 text")]
    NotUtf8,

    #[error(
        "the request path has a '.' or '..' segment (literal or percent-encoded); moat refuses such paths rather than resolve them"
    )]
    DotSegment,

    #[error("the request path has an empty segment ('//')")]
    EmptySegment,

    #[error("the request path ends with '/'; no moat route does")]
    TrailingSlash,
}

/// A byte, as a person would want it named in an error message.
fn describe(byte: &u8) -> String {
    match *byte {
        b' ' => "a space".to_owned(),
        b if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
        b => format!("the byte 0x{b:02X}"),
    }
}

/// Splits and decodes a request-target (path plus optional `?query`, as it
/// appeared in the request line).
pub(crate) fn parse(raw_target: &str) -> Result<Target<'_>, TargetError> {
    if !raw_target.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    let (raw_path, query) = match raw_target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw_target, None),
    };
    if raw_path.len() > MAX_PATH_LEN {
        return Err(TargetError::PathTooLong {
            len: raw_path.len(),
            limit: MAX_PATH_LEN,
        });
    }
    if let Some(query) = query
        && query.len() > MAX_QUERY_LEN
    {
        return Err(TargetError::QueryTooLong {
            len: query.len(),
            limit: MAX_QUERY_LEN,
        });
    }
    if let Some(at) = raw_path.bytes().position(|b| !allowed_in_path(b)) {
        let byte = raw_path.as_bytes()[at];
        return Err(TargetError::UnencodedCharacter { at, byte });
    }
    if let Some(query) = query
        && let Some(at) = query.bytes().position(|b| !allowed_in_query(b))
    {
        let byte = query.as_bytes()[at];
        let at = raw_path.len() + 1 + at;
        return Err(TargetError::UnencodedQueryCharacter { at, byte });
    }

    let mut segments = Vec::new();
    if raw_path != "/" {
        let pieces: Vec<&str> = raw_path[1..].split('/').collect();
        let mut offset = 1;
        for (index, piece) in pieces.iter().enumerate() {
            if piece.is_empty() {
                return Err(if index + 1 == pieces.len() {
                    TargetError::TrailingSlash
                } else {
                    TargetError::EmptySegment
                });
            }
            let segment = decode(piece, offset)?;
            if segment == "." || segment == ".." {
                return Err(TargetError::DotSegment);
            }
            segments.push(segment);
            offset += piece.len() + 1;
        }
    }
    Ok(Target {
        raw_path,
        segments,
        query,
    })
}

/// RFC 3986 `pchar`, plus `/` and the `%` that starts an encoding.
fn allowed_in_path(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte)
}

/// Visible ASCII except `#`. Looser than the path because clients put JSON
/// in query values unencoded, and the query is left for its reader to parse.
fn allowed_in_query(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b'#'
}

/// Decodes one path segment, once: a `%25` becomes `%` and stays that.
/// `offset` is where the segment starts in the target, for error messages.
fn decode(piece: &str, offset: usize) -> Result<String, TargetError> {
    let bytes = piece.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
            return Err(TargetError::InvalidPercentEncoding { at: offset + i });
        };
        let byte = high << 4 | low;
        if let Some(what) = forbidden_when_decoded(byte) {
            return Err(TargetError::ForbiddenEncoding {
                sequence: piece[i..i + 3].to_owned(),
                what,
            });
        }
        decoded.push(byte);
        i += 3;
    }
    String::from_utf8(decoded).map_err(|_| TargetError::NotUtf8)
}

fn hex(byte: Option<&u8>) -> Option<u8> {
    let digit = char::from(*byte?).to_digit(16)?;
    u8::try_from(digit).ok()
}

/// Bytes that no name in the API contains and that would change the path's
/// structure, or poison a log line, once decoded.
fn forbidden_when_decoded(byte: u8) -> Option<&'static str> {
    match byte {
        b'/' => Some("a slash"),
        b'?' => Some("a question mark"),
        b'#' => Some("a hash sign"),
        0 => Some("a NUL byte"),
        b if b.is_ascii_control() => Some("a control character"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(raw: &str) -> Vec<String> {
        parse(raw).unwrap().segments
    }

    #[test]
    fn splits_path_and_query() {
        let target = parse("/v1.41/containers/json?all=1&filters=%7B%7D").unwrap();
        assert_eq!(target.raw_path, "/v1.41/containers/json");
        assert_eq!(target.segments, ["v1.41", "containers", "json"]);
        assert_eq!(target.query, Some("all=1&filters=%7B%7D"));
        assert_eq!(parse("/_ping").unwrap().query, None);
        assert_eq!(parse("/_ping?").unwrap().query, Some(""));
        // Only the first '?' ends the path; later ones belong to the query.
        assert_eq!(parse("/a?b?c").unwrap().query, Some("b?c"));
    }

    #[test]
    fn the_root_has_no_segments() {
        assert!(segments("/").is_empty());
    }

    #[test]
    fn only_origin_form_targets_are_accepted() {
        for raw in [
            "",
            "*",
            "containers/json",
            "http://host/containers/json",
            "host:2376",
        ] {
            assert_eq!(parse(raw), Err(TargetError::NotOriginForm), "{raw:?}");
        }
    }

    #[test]
    fn decodes_exactly_once() {
        assert_eq!(segments("/%63ontainers/json"), ["containers", "json"]);
        assert_eq!(
            segments("/containers/a%2541/start"),
            ["containers", "a%41", "start"]
        );
        assert_eq!(
            segments("/images/caf%C3%A9/json"),
            ["images", "café", "json"]
        );
        // Upper- and lower-case hex digits both decode.
        assert_eq!(segments("/a%3a%3Ab"), ["a::b"]);
    }

    #[test]
    fn encodings_that_would_change_the_structure_are_refused() {
        for (raw, sequence) in [
            ("/containers%2fcreate", "%2f"),
            ("/containers%2Fcreate", "%2F"),
            ("/containers/abc%00/start", "%00"),
            ("/containers/a%0Ab/start", "%0A"),
            ("/containers/a%0db/start", "%0d"),
            ("/containers/a%7Fb/start", "%7F"),
            ("/containers/a%3Fb/start", "%3F"),
            ("/containers/a%23b/start", "%23"),
        ] {
            match parse(raw) {
                Err(TargetError::ForbiddenEncoding { sequence: s, .. }) => {
                    assert_eq!(s, sequence, "{raw}");
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn broken_percent_encodings_are_refused() {
        for (raw, at) in [
            ("/a%", 2),
            ("/a%4", 2),
            ("/a%zz", 2),
            ("/a%g1", 2),
            ("/ok/b%%41", 5),
            ("/a%-1", 2),
            ("/a%+1", 2),
        ] {
            assert_eq!(
                parse(raw),
                Err(TargetError::InvalidPercentEncoding { at }),
                "{raw}"
            );
        }
        assert_eq!(parse("/images/%C3%28/json"), Err(TargetError::NotUtf8));
        // An overlong encoding of '/' is not UTF-8, so it cannot sneak one in.
        assert_eq!(parse("/containers%C0%AFcreate"), Err(TargetError::NotUtf8));
    }

    #[test]
    fn dot_segments_are_refused_literal_or_encoded() {
        for raw in [
            "/v1.41/containers/../containers/create",
            "/v1.41/containers/%2e%2e/x",
            "/v1.41/containers/%2E%2E/x",
            "/v1.41/containers/.%2e/x",
            "/./containers/json",
            "/containers/%2e/json",
            "/containers/json/..",
        ] {
            assert_eq!(parse(raw), Err(TargetError::DotSegment), "{raw}");
        }
        // Dots inside a segment are names, not navigation.
        assert_eq!(segments("/images/alpine:3.19/json")[1], "alpine:3.19");
        assert_eq!(segments("/a/.../b")[1], "...");
    }

    #[test]
    fn empty_segments_and_trailing_slashes_are_refused() {
        assert_eq!(parse("//containers/create"), Err(TargetError::EmptySegment));
        assert_eq!(
            parse("/v1.41//containers/json"),
            Err(TargetError::EmptySegment)
        );
        assert_eq!(parse("/containers//"), Err(TargetError::EmptySegment));
        assert_eq!(parse("/containers/json/"), Err(TargetError::TrailingSlash));
        assert_eq!(parse("/v1.41/"), Err(TargetError::TrailingSlash));
        assert_eq!(
            parse("/containers/json/?all=1"),
            Err(TargetError::TrailingSlash)
        );
    }

    #[test]
    fn unencoded_characters_outside_pchar_are_refused() {
        for (raw, at, byte) in [
            ("/containers/a b/json", 13, b' '),
            ("/containers/a\"b/json", 13, b'"'),
            ("/containers/a\\b/json", 13, b'\\'),
            ("/containers/{id}/json", 12, b'{'),
            ("/containers/a\tb/json", 13, b'\t'),
            ("/containers/json#frag", 16, b'#'),
            ("/images/café/json", 11, 0xC3),
        ] {
            assert_eq!(
                parse(raw),
                Err(TargetError::UnencodedCharacter { at, byte }),
                "{raw:?}"
            );
        }
        // Everything RFC 3986 allows in a segment passes through.
        assert_eq!(segments("/a-._~!$&'()*+,;=:@z"), ["a-._~!$&'()*+,;=:@z"]);
    }

    #[test]
    fn the_query_must_be_visible_ascii_without_a_fragment() {
        assert_eq!(
            parse("/containers/json?a=b#frag"),
            Err(TargetError::UnencodedQueryCharacter { at: 20, byte: b'#' })
        );
        assert_eq!(
            parse("/containers/json?a= b"),
            Err(TargetError::UnencodedQueryCharacter { at: 19, byte: b' ' })
        );
        assert_eq!(
            parse("/containers/json?a=\x01"),
            Err(TargetError::UnencodedQueryCharacter { at: 19, byte: 1 })
        );
        // JSON typed by hand into a query is left for the query's reader.
        let target = parse(r#"/containers/json?filters={"label":["a=b"]}"#).unwrap();
        assert_eq!(target.query, Some(r#"filters={"label":["a=b"]}"#));
    }

    #[test]
    fn long_paths_and_queries_are_refused() {
        let at_limit = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(parse(&at_limit).is_ok());
        let over = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(
            parse(&over),
            Err(TargetError::PathTooLong {
                len: MAX_PATH_LEN + 1,
                limit: MAX_PATH_LEN
            })
        );
        let query = format!("/_ping?{}", "q".repeat(MAX_QUERY_LEN + 1));
        assert!(matches!(
            parse(&query),
            Err(TargetError::QueryTooLong { .. })
        ));
        // The path cap holds whatever follows it.
        let over_with_query = format!("{over}?a=1");
        assert!(matches!(
            parse(&over_with_query),
            Err(TargetError::PathTooLong { .. })
        ));
    }

    #[test]
    fn messages_name_the_problem() {
        let message = parse("/containers/a b").unwrap_err().to_string();
        assert_eq!(
            message,
            "the request path has a space at byte 13; it must be percent-encoded"
        );
        let message = parse("/containers%2fcreate").unwrap_err().to_string();
        assert_eq!(
            message,
            "the request path encodes a slash as %2f, which a path segment may not contain"
        );
        let message = parse("/images/café").unwrap_err().to_string();
        assert!(message.contains("the byte 0xC3"), "{message}");
    }
}
