//! Image references as Docker reads them (`distribution/reference`), one
//! parser for the engine's image store and the gateway's policy alike:
//! `busybox` is `docker.io/library/busybox:latest`, a first component with a
//! `.` or `:` or that is `localhost` is a registry, and `docker images`
//! shows the short, "familiar" form back.

use std::fmt;
use std::str::FromStr;

/// A reference that does not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format: {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

impl ReferenceError {
    fn new(reference: &str, reason: impl ToString) -> ReferenceError {
        ReferenceError {
            reference: reference.to_owned(),
            reason: reason.to_string(),
        }
    }
}

type Result<T, E = ReferenceError> = std::result::Result<T, E>;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A normalized reference: a repository, and a tag or a digest (or both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// What the user wrote, before `latest` is filled in.
pub struct Parsed {
    pub reference: Reference,
    /// Neither a tag nor a digest was given: `docker save busybox` saves
    /// every tag of the repository.
    pub name_only: bool,
}

impl Reference {
    /// Parses and normalizes `input`; a reference without a tag or digest
    /// gets `latest`.
    pub fn parse(input: &str) -> Result<Reference> {
        Ok(parse(input)?.reference)
    }

    /// A reference that names one tag, as `docker tag` and `import` need:
    /// no digest.
    pub fn parse_tag(input: &str) -> Result<Reference> {
        let reference = Reference::parse(input)?;
        if reference.digest.is_some() {
            return Err(ReferenceError::new(
                input,
                "refusing to create a tag with a digest reference",
            ));
        }
        Ok(reference)
    }

    /// `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The repository as `docker images` shows it: `busybox`,
    /// `alice/app`, `localhost:5000/team/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(short) if !short.contains('/') => short.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        }
    }

    /// `busybox:test`, as `docker images` and `RepoTags` show it.
    pub fn familiar(&self) -> String {
        self.with_name(self.familiar_name())
    }

    fn with_name(&self, mut name: String) -> String {
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(digest);
        }
        name
    }
}

impl fmt::Display for Reference {
    /// The full form: `docker.io/library/busybox:test`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_name(self.repository()))
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

pub fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn parse(input: &str) -> Result<Parsed> {
    let bad = |reason: &str| ReferenceError::new(input, reason);
    if input.is_empty() {
        return Err(bad("empty reference"));
    }
    if input.len() == 64 && is_hex(input) {
        return Err(bad("cannot specify 64-byte hexadecimal strings as a name"));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(parse_digest(input, digest)?)),
        None => (input, None),
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
            "repository name components must be lowercase letters, digits and single separators (., _, __, -)",
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
    let name_only = tag.is_none() && digest.is_none();
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_owned()),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TAG.to_owned()),
    };
    Ok(Parsed {
        reference: Reference {
            domain,
            path,
            tag,
            digest,
        },
        name_only,
    })
}

/// `sha256:` and 64 lowercase hex digits: the only algorithm the store uses.
fn parse_digest(input: &str, digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && is_hex(hex) => Ok(digest.to_owned()),
        Some(("sha256", _)) => Err(ReferenceError::new(
            input,
            "a sha256 digest is 64 lowercase hex digits",
        )),
        Some((algorithm, _)) if !algorithm.is_empty() => Err(ReferenceError::new(
            input,
            format!("unsupported digest algorithm {algorithm:?}"),
        )),
        _ => Err(ReferenceError::new(input, "invalid digest")),
    }
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

    fn full(input: &str) -> String {
        Reference::parse(input).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:test"), "docker.io/library/busybox:test");
        assert_eq!(full("alice/app"), "docker.io/alice/app:latest");
        assert_eq!(
            full("index.docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            full("localhost:5000/team/app:1"),
            "localhost:5000/team/app:1"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(
            full("registry.example.com/a/b/c:v1.2-rc_3"),
            "registry.example.com/a/b/c:v1.2-rc_3"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            full(&format!("busybox@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
        assert_eq!(
            full(&format!("busybox:1@{digest}")),
            format!("docker.io/library/busybox:1@{digest}")
        );
        assert_eq!(full("[::1]:5000/app:x"), "[::1]:5000/app:x");
        assert_eq!(full("[::1]/app"), "[::1]/app:latest");
        assert_eq!(full("a__b-c---d/f_g.h:t"), "docker.io/a__b-c---d/f_g.h:t");
    }

    #[test]
    fn familiar_form_is_what_docker_images_shows() {
        let familiar = |s: &str| Reference::parse(s).unwrap().familiar();
        assert_eq!(familiar("docker.io/library/busybox:test"), "busybox:test");
        assert_eq!(familiar("busybox"), "busybox:latest");
        assert_eq!(familiar("docker.io/alice/app:1"), "alice/app:1");
        assert_eq!(
            familiar("docker.io/library/a/b:1"),
            "library/a/b:1",
            "only a single component after library/ is shortened"
        );
        assert_eq!(
            familiar("localhost:5000/team/app:1"),
            "localhost:5000/team/app:1"
        );
        let r = Reference::parse("busybox:test").unwrap();
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.repository(), "docker.io/library/busybox");
        assert_eq!(r.tag(), Some("test"));
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.digest(), None);
    }

    #[test]
    fn rejects_bad_references_with_reasons() {
        let reason = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert!(reason("").contains("empty"), "{}", reason(""));
        assert!(reason("Busybox").contains("lowercase"));
        assert!(reason("alice/App:1").contains("lowercase"));
        assert!(reason("busybox:-bad").contains("tags are"));
        assert!(reason("busybox:").contains("tags are"));
        assert!(reason(&format!("busybox:{}", "a".repeat(129))).contains("tags are"));
        assert!(reason("busybox:a/b").contains("registry host"));
        assert!(reason("bad..name").contains("lowercase letters"));
        assert!(reason("bad_").contains("lowercase letters"));
        assert!(reason("a//b").contains("lowercase letters"));
        assert!(reason("busybox@sha256:abc").contains("64 lowercase hex"));
        assert!(reason("busybox@md5:abc").contains("unsupported digest"));
        assert!(reason(&"a".repeat(64)).contains("64-byte"));
        assert!(reason("exa_mple.com:80/app").contains("registry host"));
        assert!(reason("localhost:x5/app").contains("registry host"));
        assert!(reason(&format!("{}/x", "a".repeat(260))).contains("255"));
        let err = Reference::parse("Busybox").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid reference format"),
            "{err}"
        );
        assert!(matches!(
            Reference::parse_tag(&format!("busybox@sha256:{}", "1".repeat(64))),
            Err(ReferenceError { .. })
        ));
    }

    #[test]
    fn an_uppercase_first_component_is_a_registry() {
        // As in Docker: `Example/app` names the host `Example`.
        assert_eq!(full("Example/app"), "Example/app:latest");
    }

    #[test]
    fn name_only_is_reported() {
        assert!(parse("busybox").unwrap().name_only);
        assert!(!parse("busybox:latest").unwrap().name_only);
        assert!(parse("localhost:5000/app").unwrap().name_only);
    }
}
