//! Image references, normalized as Docker's `distribution/reference` (and
//! moat's engine, through `moat_api::image_ref`) reads them, down to
//! the repository that `image.use`, `image.pull`, `image.push` and
//! `image.name` are checked on: `alpine:3.20` → `docker.io/library/alpine`.
//!
//! The parser is `moat_api::image_ref`, the engine's own, so the
//! repository the policy judges is the one the engine will use. The registry host is
//! lower-cased in the object (DNS names are case-insensitive, so
//! `EVIL.io` must not slip past a rule about `evil.io`).

/// Why a reference is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// The normalized repository of `input` (a name with optional tag and
/// digest): `busybox:test` → `docker.io/library/busybox`,
/// `localhost:5000/team/app@sha256:…` → `localhost:5000/team/app`.
pub fn repository(input: &str) -> Result<String, ReferenceError> {
    let reference = Reference::parse(input).map_err(|e| ReferenceError {
        input: input.to_owned(),
        reason: e.reason,
    })?;
    let repository = reference.repository();
    let path = repository
        .strip_prefix(reference.domain())
        .unwrap_or(&repository);
    Ok(format!("{}{path}", reference.domain().to_ascii_lowercase()))
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
            reason: "an image id is sha256: and 64 lowercase hex digits".into(),
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

use moat_api::image_ref::{Reference, is_hex};

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
