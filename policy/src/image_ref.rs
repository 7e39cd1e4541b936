//! Image references, normalized as Docker's `distribution/reference` (and
//! moat's engine, `engine/src/images/reference.rs`) reads them, down to
//! the repository that `image.use`, `image.pull`, `image.push` and
//! `image.name` are checked on: `alpine:3.20` → `docker.io/library/alpine`.
//!
//! The grammar is the engine's, rule for rule, so the repository the
//! policy judges is the one the engine will use. The registry host is
//! lower-cased in the object (DNS names are case-insensitive, so
//! `EVIL.io` must not slip past a rule about `evil.io`).

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// Why a reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: &'static str,
}

/// The normalized repository of `input` (a name with optional tag and
/// digest): `busybox:test` → `docker.io/library/busybox`,
/// `localhost:5000/team/app@sha256:…` → `localhost:5000/team/app`.
pub fn repository(input: &str) -> Result<String, ReferenceError> {
    let bad = |reason| ReferenceError {
        input: input.to_owned(),
        reason,
    };
    if input.is_empty() {
        return Err(bad("empty reference"));
    }
    if input.len() == 64 && is_hex(input) {
        return Err(bad("cannot specify 64-byte hexadecimal strings as a name"));
    }
    let rest = match input.split_once('@') {
        Some((rest, digest)) => {
            if !valid_digest(digest) {
                return Err(bad("a digest is sha256: and 64 lowercase hex digits"));
            }
            rest
        }
        None => input,
    };
    // A `:` after the last `/` is the tag; one before it is a port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let (domain, path) = split_domain(name);
    if path.to_lowercase() != path {
        return Err(bad("repository name must be lowercase"));
    }
    if !valid_domain(&domain) {
        return Err(bad("invalid registry host"));
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(bad(
            "repository name components must be lowercase letters, digits and single separators",
        ));
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(bad("repository name must not be more than 255 characters"));
    }
    if let Some(tag) = tag
        && !valid_tag(tag)
    {
        return Err(bad(
            "tags are 1 to 128 letters, digits, _, . and -, not starting with . or -",
        ));
    }
    Ok(format!("{}/{path}", domain.to_ascii_lowercase()))
}

/// The repository a `repo` and `tag` query pair names, read as moat's
/// engine reads it: `REPO:TAG` parsed as one reference, so a tag that
/// smuggles a `/` names the repository the engine would really write.
pub fn repository_with_tag(repo: &str, tag: Option<&str>) -> Result<String, ReferenceError> {
    match tag.filter(|t| !t.is_empty()) {
        Some(tag) => repository(&format!("{repo}:{tag}")),
        None => repository(repo),
    }
}

/// The objects `image.use` is checked on for a container's `Image`, which
/// Docker resolves as a name, a full id, or an id prefix:
/// - `sha256:HEX` or 64 hex digits: the id, `sha256:HEX`;
/// - a name that is only hex digits (`cafe`, `1a2b3c`): both the name's
///   repository and `sha256:PREFIX`, since the engine may resolve it as an
///   id prefix when no image has that name;
/// - anything else: the name's repository.
pub fn image_objects(image: &str) -> Result<Vec<String>, ReferenceError> {
    if let Some(hex) = image.strip_prefix("sha256:") {
        if hex.len() == 64 && is_hex(hex) {
            return Ok(vec![image.to_owned()]);
        }
        return Err(ReferenceError {
            input: image.to_owned(),
            reason: "an image id is sha256: and 64 lowercase hex digits",
        });
    }
    if image.len() == 64 && is_hex(image) {
        return Ok(vec![format!("sha256:{image}")]);
    }
    let repo = repository(image)?;
    if is_hex(image) {
        return Ok(vec![repo, format!("sha256:{image}")]);
    }
    Ok(vec![repo])
}

/// Whether `pattern` (a policy object for a repository permission, with
/// an optional trailing `*`) can name normalized repositories: `*`,
/// `sha256:…`, or a registry host followed by `/`. `alpine` or
/// `library/alpine` can never match (objects are always normalized), so
/// policy validation refuses them with the form to write instead.
pub fn is_normalized_pattern(pattern: &str) -> bool {
    if pattern == "*" || pattern.starts_with("sha256:") {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.split_once('/').is_some_and(|(domain, _)| {
            (domain.contains(['.', ':']) || domain == "localhost")
                && domain == domain.to_ascii_lowercase()
        }),
        None => repository(pattern).as_deref() == Ok(pattern),
    }
}

pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn valid_digest(digest: &str) -> bool {
    matches!(digest.split_once(':'), Some(("sha256", hex)) if hex.len() == 64 && is_hex(hex))
}

/// Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO_PREFIX}{path}");
    }
    (domain, path)
}

fn valid_domain(domain: &str) -> bool {
    let valid_port = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    port.is_none_or(valid_port)
        && !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_LENGTH_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        for (input, want) in [
            ("alpine", "docker.io/library/alpine"),
            ("alpine:3.20", "docker.io/library/alpine"),
            ("busybox:test", "docker.io/library/busybox"),
            ("library/alpine", "docker.io/library/alpine"),
            ("docker.io/alpine", "docker.io/library/alpine"),
            (
                "index.docker.io/library/alpine:1",
                "docker.io/library/alpine",
            ),
            ("alice/app", "docker.io/alice/app"),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/team/app:1.0", "localhost:5000/team/app"),
            ("Registry.Example.com/a/b", "registry.example.com/a/b"),
            ("[::1]:5000/app", "[::1]:5000/app"),
        ] {
            assert_eq!(repository(input).unwrap(), want, "{input}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            repository(&format!("alpine@{digest}")).unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository(&format!("quay.io/x/y:1@{digest}")).unwrap(),
            "quay.io/x/y"
        );
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for input in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "a//b",
            "alpine@sha256:abc",
            "alpine@md5:00",
            "http://x/y",
            "x/../y",
            &"a".repeat(64),
            "-bad.io/x",
            "bad_.io:/x",
        ] {
            assert!(repository(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn a_tag_is_read_as_the_engine_reads_it() {
        assert_eq!(
            repository_with_tag("app", Some("1")).unwrap(),
            "docker.io/library/app"
        );
        // `REPO:TAG` with a `/` in the tag makes `app:1` the registry.
        assert_eq!(repository_with_tag("app", Some("1/x")).unwrap(), "app:1/x");
        assert_eq!(
            repository_with_tag("quay.io/a/b", None).unwrap(),
            "quay.io/a/b"
        );
    }

    #[test]
    fn ids_and_id_prefixes() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(image_objects(&hex).unwrap(), vec![format!("sha256:{hex}")]);
        assert_eq!(
            image_objects(&format!("sha256:{hex}")).unwrap(),
            vec![format!("sha256:{hex}")]
        );
        assert!(image_objects("sha256:abc").is_err());
        assert_eq!(
            image_objects("cafe").unwrap(),
            vec!["docker.io/library/cafe", "sha256:cafe"]
        );
        assert_eq!(
            image_objects("alpine").unwrap(),
            vec!["docker.io/library/alpine"]
        );
    }

    #[test]
    fn patterns_must_be_normalized() {
        for ok in [
            "*",
            "docker.io/library/*",
            "docker.io/library/alpine",
            "quay.io/*",
            "localhost:5000/team/*",
            "sha256:*",
        ] {
            assert!(is_normalized_pattern(ok), "{ok}");
        }
        for bad in [
            "alpine",
            "library/alpine",
            "docker.io/alpine",
            "Quay.io/x",
            "docker.io/library/Alpine",
        ] {
            assert!(!is_normalized_pattern(bad), "{bad}");
        }
    }
}
