//! Host paths, normalized lexically: the form `host.bind` and `host.device`
//! objects take.
//!
//! Nothing here touches the host's filesystem. The gateway runs
//! unprivileged and the paths are not its to read, and anything it read
//! could change before the engine acts (the engine canonicalizes a bind
//! source when it creates the container, following symlinks). So an
//! allow-list matches the path as written, cleaned the way Go's
//! `filepath.Clean` (and so the docker CLI) cleans it: see
//! `docs/policy.md` for what that means for directories others can write.

/// Why a host path cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}

/// `/a//b/./c/../d/` → `/a/b/d`. `..` at the root stays at the root, as
/// the kernel resolves it.
pub fn normalize(path: &str) -> Result<String, HostPathError> {
    if !path.starts_with('/') {
        return Err(HostPathError::NotAbsolute(path.to_owned()));
    }
    if path.contains('\0') {
        return Err(HostPathError::Nul(path.to_owned()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut out = String::with_capacity(path.len());
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_filepath_clean() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/../b", "/b"),
            ("/a/b/", "/a/b"),
            ("//a///b//", "/a/b"),
            ("/./a/./b/.", "/a/b"),
            ("/..", "/"),
            ("/../../etc", "/etc"),
            ("/tmp/moat-shared/x/../../../etc/shadow", "/etc/shadow"),
            ("/a/b/..", "/a"),
            ("/a/..b", "/a/..b"),
            ("/a/.../b", "/a/.../b"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        assert_eq!(
            normalize("data"),
            Err(HostPathError::NotAbsolute("data".into()))
        );
        assert!(normalize("").is_err());
        assert!(normalize("/a\0b").is_err());
    }
}
