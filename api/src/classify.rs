//! Classification: an HTTP method and a request-target, as received, become
//! a [`Route`] (the action, the object, the API version), or an error that
//! says why the request is refused. Nothing is guessed: a target that could
//! be read two ways is refused, not normalized.

use crate::action::{Action, Server};
use crate::object::Object;
use crate::routes::{DELETE, GET, HEAD, POST, PUT, compiled};
use crate::target::{self, TargetError};
use crate::version::{ApiVersion, VersionError};

/// What a request is, once classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub action: Action,
    /// The object the path names, if the route names one.
    pub object: Option<Object>,
    /// The version from the `/vX.Y` prefix; `None` when there was none.
    pub version: Option<ApiVersion>,
    /// The path, percent-decoded, without the version prefix, e.g.
    /// `/containers/web/start`: for audit records and logs. Forward the
    /// request-target as received, not this.
    pub path: String,
    /// The query string as received, without the `?` and not decoded;
    /// `None` when the target had no `?`.
    pub query: Option<String>,
    /// The table pattern that matched, e.g. `/containers/{id}/start`.
    pub pattern: &'static str,
}

impl Route {
    /// The version the request is served at: the one it asked for, or
    /// the newest, as Docker does for a path without a prefix.
    pub fn effective_version(&self) -> ApiVersion {
        self.version.unwrap_or(ApiVersion::MAX)
    }
}

/// Why a request could not be classified. Each message is meant for the
/// person at the client, as `{"message": "..."}`; [`ClassifyError::status`]
/// gives the HTTP status Docker would answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// Not an HTTP token; it is not echoed back.
    #[error("the request method is not a valid HTTP method")]
    InvalidMethod,

    #[error(transparent)]
    Target(#[from] TargetError),

    #[error(transparent)]
    Version(#[from] VersionError),

    #[error("no API route for {method} {path}")]
    UnknownRoute { method: String, path: String },

    /// The path is a route, but not with this method. Methods are
    /// case-sensitive (RFC 9110), so `get` lands here, listing `GET`.
    #[error("{method} is not allowed on {path}; allowed: {}", .allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        /// The methods the path does accept, for an `Allow` header.
        allowed: Vec<&'static str>,
    },
}

impl ClassifyError {
    /// The HTTP status for this error: 404 for an unknown route, 405 for a
    /// method the route does not take, 414 for a target over the length
    /// caps, and 400 for everything else (as Docker answers a bad version).
    pub fn status(&self) -> u16 {
        match self {
            ClassifyError::Target(
                TargetError::PathTooLong { .. } | TargetError::QueryTooLong { .. },
            ) => 414,
            ClassifyError::UnknownRoute { .. } => 404,
            ClassifyError::MethodNotAllowed { .. } => 405,
            _ => 400,
        }
    }
}

/// Longest method accepted; the longest the table uses is `DELETE`.
const MAX_METHOD_LEN: usize = 32;

/// The order methods are listed in [`ClassifyError::MethodNotAllowed`].
const METHOD_ORDER: [&str; 5] = [GET, HEAD, POST, PUT, DELETE];

/// Classifies a request: `method` as on the request line (case-sensitive),
/// `raw_target` the request-target as received, path plus optional
/// `?query`, still percent-encoded.
///
/// The path is decoded once; dot segments, empty segments, a trailing slash,
/// an encoded `/`, `?`, `#` or control character, and invalid encodings are
/// refused. An optional `/vMAJOR.MINOR` prefix must name a version between
/// [`MIN_API_VERSION`](crate::MIN_API_VERSION) and
/// [`MAX_API_VERSION`](crate::MAX_API_VERSION); moat's own `/moat/v1` routes
/// take no prefix.
pub fn classify(method: &str, raw_target: &str) -> Result<Route, ClassifyError> {
    if !is_method_token(method) {
        return Err(ClassifyError::InvalidMethod);
    }
    let target = target::parse(raw_target)?;

    let mut segments = target.segments.as_slice();
    let mut version = None;
    if let Some(text) = segments.first().and_then(|first| version_text(first)) {
        version = Some(ApiVersion::parse(text)?.check_supported()?);
        segments = &segments[1..];
    }

    // Every route the path fits, whatever its method: if none has the
    // request's method the answer is 405, not 404.
    let mut matches: Vec<_> = compiled()
        .iter()
        .filter(|route| version.is_none() || route.spec.action.served_by() == Server::Engine)
        .filter_map(|route| Some((route, route.capture(segments)?)))
        .collect();
    if matches.is_empty() {
        return Err(ClassifyError::UnknownRoute {
            method: method.to_owned(),
            path: target.raw_path.to_owned(),
        });
    }

    // Of the routes with the request's method, the one that fixes the most
    // segments wins; a test checks that the table never ties.
    let mut best: Option<usize> = None;
    for (index, (route, _)) in matches.iter().enumerate() {
        if route.spec.method != method {
            continue;
        }
        if best.is_none_or(|b| route.literal_segments() > matches[b].0.literal_segments()) {
            best = Some(index);
        }
    }
    let Some(best) = best else {
        let mut allowed: Vec<&'static str> =
            matches.iter().map(|(route, _)| route.spec.method).collect();
        allowed.sort_by_key(|m| METHOD_ORDER.iter().position(|o| o == m));
        allowed.dedup();
        return Err(ClassifyError::MethodNotAllowed {
            method: method.to_owned(),
            path: target.raw_path.to_owned(),
            allowed,
        });
    };

    let (route, parameter) = matches.swap_remove(best);
    Ok(Route {
        action: route.spec.action,
        object: route
            .spec
            .object
            .zip(parameter)
            .map(|(kind, name)| kind.named(name)),
        version,
        path: format!("/{}", segments.join("/")),
        query: target.query.map(str::to_owned),
        pattern: route.spec.pattern,
    })
}

/// The version in a first segment that is meant as one: `v` and then only
/// digits and dots, as Docker's router reads it (`/v{version:[0-9.]+}`).
/// Whether it is well-formed is for [`ApiVersion::parse`] to say, so `/v1`
/// is a malformed version rather than an unknown route.
fn version_text(segment: &str) -> Option<&str> {
    let text = segment.strip_prefix('v')?;
    let looks_like_one = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    looks_like_one.then_some(text)
}

/// An RFC 9110 token of reasonable length.
fn is_method_token(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectKind;
    use crate::routes::{RouteSpec, routes};
    use crate::target::MAX_PATH_LEN;

    fn ok(method: &str, target: &str) -> Route {
        classify(method, target).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    fn err(method: &str, target: &str) -> ClassifyError {
        match classify(method, target) {
            Ok(route) => panic!("{method} {target} classified as {route:?}"),
            Err(e) => e,
        }
    }

    /// A concrete path for a pattern, with `value` in its parameter.
    fn sample(spec: &RouteSpec, value: &str) -> String {
        spec.pattern
            .split('/')
            .map(|s| if s.starts_with('{') { value } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Parameter values for samples, including ones that look like the
    /// literal segments around them.
    fn values_for(spec: &RouteSpec) -> Vec<&'static str> {
        let mut values = vec!["x1", "json", "create", "get", "prune", "start", "logs"];
        if spec.object.is_some_and(ObjectKind::spans_segments) {
            values.extend([
                "registry:5000/team/app:1.0",
                "a/json",
                "a/get",
                "vieux/sshfs",
            ]);
        }
        values
    }

    #[test]
    fn every_route_classifies_back_to_itself() {
        for spec in routes() {
            let value = "registry:5000/team/app:1.0";
            let value = if spec.object.is_some_and(ObjectKind::spans_segments) {
                value
            } else {
                "x1"
            };
            let path = sample(spec, value);
            let route = ok(spec.method, &path);
            assert_eq!(route.action, spec.action, "{} {path}", spec.method);
            assert_eq!(route.pattern, spec.pattern, "{} {path}", spec.method);
            assert_eq!(route.path, path);
            assert_eq!(route.version, None);
            assert_eq!(
                route.object,
                spec.object.map(|kind| kind.named(value.to_owned())),
                "{} {path}",
                spec.method
            );
            if spec.action.served_by() == Server::Engine {
                let versioned = ok(spec.method, &format!("/v1.41{path}"));
                assert_eq!(versioned.action, spec.action);
                assert_eq!(versioned.version, Some(ApiVersion::MAX));
                assert_eq!(versioned.path, path);
            }
        }
    }

    #[test]
    fn no_path_matches_two_routes_equally_well() {
        for spec in routes() {
            for value in values_for(spec) {
                let path = sample(spec, value);
                let target = target::parse(&path).unwrap();
                let mut best: Vec<usize> = compiled()
                    .iter()
                    .filter(|r| r.spec.method == spec.method)
                    .filter(|r| r.capture(&target.segments).is_some())
                    .map(|r| r.literal_segments())
                    .collect();
                best.sort_unstable();
                let top = best.pop().expect("the route matches its own sample");
                assert_ne!(best.pop(), Some(top), "{} {path} is ambiguous", spec.method);
            }
        }
    }

    #[test]
    fn literal_routes_win_over_parameters_and_methods_decide_the_rest() {
        assert_eq!(ok(GET, "/images/json").action, Action::ImageList);
        assert_eq!(ok(GET, "/images/json").object, None);
        let route = ok(DELETE, "/images/json");
        assert_eq!(route.action, Action::ImageRemove);
        assert_eq!(route.object, Some(Object::Image("json".into())));
        assert_eq!(ok(GET, "/containers/json").action, Action::ContainerList);
        assert_eq!(
            ok(DELETE, "/containers/create").object,
            Some(Object::Container("create".into()))
        );
        assert_eq!(ok(GET, "/images/get").object, None);
        assert_eq!(ok(GET, "/images/get").action, Action::ImageSave);
        assert_eq!(
            ok(GET, "/images/alpine/get").object,
            Some(Object::Image("alpine".into()))
        );
        assert_eq!(
            ok(GET, "/plugins/privileges").action,
            Action::PluginPrivileges
        );
        assert_eq!(ok(GET, "/networks/create").action, Action::NetworkInspect);
    }

    #[test]
    fn image_and_plugin_names_span_segments() {
        let route = ok(GET, "/v1.41/images/registry.example:5000/team/app:1.0/json");
        assert_eq!(route.action, Action::ImageInspect);
        assert_eq!(
            route.object,
            Some(Object::Image("registry.example:5000/team/app:1.0".into()))
        );
        assert_eq!(
            route.path,
            "/images/registry.example:5000/team/app:1.0/json"
        );

        let digest =
            "alpine@sha256:1e42bbe2508154c9126d48c2b8a75420c3544343bf86fd041fb7527e017a4b4a";
        let route = ok(DELETE, &format!("/images/docker.io/library/{digest}"));
        assert_eq!(route.action, Action::ImageRemove);
        assert_eq!(
            route.object,
            Some(Object::Image(format!("docker.io/library/{digest}")))
        );

        // The name is everything up to the last segment, as Docker's
        // greedy `{name:.*}` reads it.
        assert_eq!(
            ok(GET, "/images/a/json/json").object,
            Some(Object::Image("a/json".into()))
        );
        assert_eq!(
            ok(GET, "/images/a/history/json").action,
            Action::ImageInspect
        );
        for (method, target, action) in [
            (POST, "/images/team/app/push?tag=1", Action::ImagePush),
            (POST, "/images/team/app/tag?repo=other", Action::ImageTag),
            (GET, "/images/team/app/history", Action::ImageHistory),
            (GET, "/images/team/app/get", Action::ImageSave),
            (
                GET,
                "/distribution/team/app:1/json",
                Action::DistributionInspect,
            ),
        ] {
            let route = ok(method, target);
            assert_eq!(route.action, action, "{target}");
            assert!(
                route.object.unwrap().name().starts_with("team/app"),
                "{target}"
            );
        }
        assert_eq!(
            ok(POST, "/plugins/vieux/sshfs:latest/enable").object,
            Some(Object::Plugin("vieux/sshfs:latest".into()))
        );
        assert_eq!(
            ok(DELETE, "/plugins/vieux/sshfs:latest").object,
            Some(Object::Plugin("vieux/sshfs:latest".into()))
        );
    }

    #[test]
    fn other_names_are_one_segment() {
        for (method, target) in [
            (POST, "/containers/a/b/start"),
            (DELETE, "/containers/a/b"),
            (POST, "/exec/a/b/start"),
            (GET, "/volumes/a/b"),
            (GET, "/networks/a/b"),
        ] {
            assert!(
                matches!(err(method, target), ClassifyError::UnknownRoute { .. }),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn the_path_names_the_object_the_action_acts_on() {
        let route = ok(POST, "/v1.41/containers/web/exec");
        assert_eq!(route.action, Action::ExecCreate);
        assert_eq!(route.object, Some(Object::Container("web".into())));
        let route = ok(POST, "/exec/3f2a/start");
        assert_eq!(route.object, Some(Object::Exec("3f2a".into())));
        assert_eq!(
            ok(GET, "/volumes/data").object,
            Some(Object::Volume("data".into()))
        );
        assert_eq!(
            ok(POST, "/networks/n1/connect").object,
            Some(Object::Network("n1".into()))
        );
        assert_eq!(
            ok(GET, "/services/s1/logs").object,
            Some(Object::Service("s1".into()))
        );
        assert_eq!(ok(POST, "/commit?container=web").object, None);
    }

    #[test]
    fn ping_answers_get_and_head_and_archive_head_is_its_own_action() {
        assert_eq!(ok(GET, "/_ping").action, Action::SystemPing);
        assert_eq!(ok(HEAD, "/_ping").action, Action::SystemPing);
        assert_eq!(ok(HEAD, "/v1.41/_ping").action, Action::SystemPing);
        assert_eq!(
            ok(HEAD, "/containers/web/archive?path=/etc").action,
            Action::ContainerArchiveHead
        );
        assert_eq!(
            ok(GET, "/containers/web/archive?path=/etc").action,
            Action::ContainerArchiveGet
        );
        assert_eq!(
            ok(PUT, "/containers/web/archive?path=/tmp").action,
            Action::ContainerArchivePut
        );
    }

    #[test]
    fn the_query_is_kept_raw_and_the_path_decoded() {
        let route = ok(
            GET,
            "/v1.41/containers/json?all=1&filters=%7B%22status%22%3A%5B%22running%22%5D%7D",
        );
        assert_eq!(route.version, Some(ApiVersion::MAX));
        assert_eq!(route.path, "/containers/json");
        assert_eq!(
            route.query.as_deref(),
            Some("all=1&filters=%7B%22status%22%3A%5B%22running%22%5D%7D")
        );
        assert_eq!(ok(GET, "/_ping").query, None);
        assert_eq!(ok(GET, "/_ping?").query.as_deref(), Some(""));
    }

    #[test]
    fn attack_strings_from_authz_proxy_bypasses() {
        use TargetError::*;
        let target_error = |target: &str| match err(GET, target) {
            ClassifyError::Target(e) => e,
            other => panic!("{target}: {other:?}"),
        };
        assert_eq!(
            target_error("/v1.41/containers/../containers/create"),
            DotSegment
        );
        assert_eq!(target_error("/v1.41/containers/%2e%2e/x"), DotSegment);
        assert!(matches!(
            target_error("/containers%2fcreate"),
            ForbiddenEncoding { .. }
        ));
        assert_eq!(target_error("//containers/create"), EmptySegment);
        assert_eq!(target_error("/v1.41//containers/json"), EmptySegment);
        assert_eq!(target_error("/containers/json/"), TrailingSlash);
        assert!(matches!(
            target_error("/containers/abc%00/start"),
            ForbiddenEncoding { .. }
        ));
        assert!(matches!(
            target_error(&format!("/{}", "a".repeat(MAX_PATH_LEN))),
            PathTooLong { .. }
        ));

        assert!(matches!(
            err(GET, "/v9.99/info"),
            ClassifyError::Version(VersionError::TooNew { .. })
        ));
        assert!(matches!(
            err(GET, "/v1.12/info"),
            ClassifyError::Version(VersionError::TooOld { .. })
        ));

        // One decoding pass yields "containers" and nothing forbidden, so
        // this is GET /containers/json: the engine reads it the same way.
        let route = ok(GET, "/%63ontainers/json");
        assert_eq!(route.action, Action::ContainerList);
        assert_eq!(route.path, "/containers/json");

        // %25 decodes to '%' and stays that: the container is "abc%2e".
        let route = ok(POST, "/containers/abc%252e/start");
        assert_eq!(route.object, Some(Object::Container("abc%2e".into())));
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        // DELETE is allowed too: it removes a container called "json".
        match err("get", "/containers/json") {
            ClassifyError::MethodNotAllowed { allowed, .. } => assert_eq!(allowed, [GET, DELETE]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            err("Post", "/containers/create"),
            ClassifyError::MethodNotAllowed { .. }
        ));
        for method in ["", "GE T", "GET\r\n", "GET/", "G\u{e9}T"] {
            assert_eq!(
                err(method, "/_ping"),
                ClassifyError::InvalidMethod,
                "{method:?}"
            );
        }
        assert_eq!(
            err(&"X".repeat(MAX_METHOD_LEN + 1), "/_ping"),
            ClassifyError::InvalidMethod
        );
    }

    #[test]
    fn unknown_paths_and_unlisted_methods_are_distinct() {
        assert_eq!(
            err(GET, "/nope?x=1"),
            ClassifyError::UnknownRoute {
                method: GET.into(),
                path: "/nope".into()
            }
        );
        assert_eq!(
            err(POST, "/_ping"),
            ClassifyError::MethodNotAllowed {
                method: POST.into(),
                path: "/_ping".into(),
                allowed: vec![GET, HEAD]
            }
        );
        match err(GET, "/v1.41/containers/create") {
            ClassifyError::MethodNotAllowed { allowed, path, .. } => {
                assert_eq!(allowed, [POST, DELETE]);
                assert_eq!(path, "/v1.41/containers/create");
            }
            other => panic!("{other:?}"),
        }
        match err(HEAD, "/containers/web/json") {
            ClassifyError::MethodNotAllowed { allowed, .. } => assert_eq!(allowed, [GET]),
            other => panic!("{other:?}"),
        }
        // No CORS preflight: moat is not for browsers.
        assert!(matches!(
            err("OPTIONS", "/_ping"),
            ClassifyError::MethodNotAllowed { .. }
        ));
        assert!(matches!(err(GET, "/"), ClassifyError::UnknownRoute { .. }));
        assert!(matches!(
            err(GET, "/v1.41"),
            ClassifyError::UnknownRoute { .. }
        ));
        // Docker's router also answers GET /networks/; moat has no trailing slashes.
        assert!(matches!(
            err(GET, "/networks/"),
            ClassifyError::Target(TargetError::TrailingSlash)
        ));
        // Routes are case-sensitive.
        assert!(matches!(
            err(GET, "/Containers/json"),
            ClassifyError::UnknownRoute { .. }
        ));
        // Docker answers it 404 from API 1.24 on, so it is not in the table.
        assert!(matches!(
            err(POST, "/containers/web/copy"),
            ClassifyError::UnknownRoute { .. }
        ));
        // Checkpoints are experimental in Docker, never in moat.
        assert!(matches!(
            err(GET, "/containers/web/checkpoints"),
            ClassifyError::UnknownRoute { .. }
        ));
    }

    #[test]
    fn version_prefixes() {
        assert_eq!(ok(GET, "/v1.24/info").version, Some(ApiVersion::MIN));
        assert_eq!(ok(GET, "/v1.41/info").version, Some(ApiVersion::MAX));
        assert_eq!(
            ok(GET, "/v1.30/info").effective_version(),
            ApiVersion::new(1, 30)
        );
        assert_eq!(ok(GET, "/info").effective_version(), ApiVersion::MAX);
        // The version segment is decoded like every other.
        assert_eq!(ok(GET, "/%761.41/info").version, Some(ApiVersion::MAX));

        for target in ["/v1.23/info", "/v1.12/info", "/v0.1/info", "/v1.4/info"] {
            assert!(
                matches!(
                    err(GET, target),
                    ClassifyError::Version(VersionError::TooOld { .. })
                ),
                "{target}"
            );
        }
        for target in ["/v1.42/info", "/v2.0/info", "/v9.99/info"] {
            assert!(
                matches!(
                    err(GET, target),
                    ClassifyError::Version(VersionError::TooNew { .. })
                ),
                "{target}"
            );
        }
        for target in [
            "/v1/info",
            "/v1./info",
            "/v1.41.0/info",
            "/v01.41/info",
            "/v1.041/info",
            "/v./info",
            "/v1..41/info",
        ] {
            assert!(
                matches!(
                    err(GET, target),
                    ClassifyError::Version(VersionError::Malformed { .. })
                ),
                "{target}"
            );
        }
        // Not versions at all: no route starts with them.
        for target in [
            "/V1.41/info",
            "/v/info",
            "/vx1.41/info",
            "/v1.41/v1.41/info",
        ] {
            assert!(
                matches!(err(GET, target), ClassifyError::UnknownRoute { .. }),
                "{target}"
            );
        }
        // Words that start with 'v' are routes, not versions.
        assert_eq!(ok(GET, "/version").action, Action::SystemVersion);
        assert_eq!(ok(GET, "/volumes").action, Action::VolumeList);
    }

    #[test]
    fn no_route_starts_with_something_read_as_a_version() {
        for spec in routes() {
            let first = spec.pattern[1..].split('/').next().unwrap();
            assert_eq!(version_text(first), None, "{}", spec.pattern);
        }
    }

    #[test]
    fn moat_admin_routes_take_no_version_prefix() {
        assert_eq!(ok(GET, "/moat/v1/whoami").action, Action::MoatWhoami);
        assert_eq!(ok(PUT, "/moat/v1/policy").action, Action::MoatPolicyPut);
        assert!(matches!(
            err(GET, "/v1.41/moat/v1/whoami"),
            ClassifyError::UnknownRoute { .. }
        ));
        assert!(matches!(
            err(PUT, "/v1.41/moat/v1/policy"),
            ClassifyError::UnknownRoute { .. }
        ));
    }

    #[test]
    fn statuses_and_messages() {
        let cases = [
            (
                err(GET, "/v1.12/info"),
                400,
                "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version",
            ),
            (
                err(GET, "/v9.99/info"),
                400,
                "client version 9.99 is too new. Maximum supported API version is 1.41",
            ),
            (err(GET, "/nope"), 404, "no API route for GET /nope"),
            (
                err(POST, "/_ping"),
                405,
                "POST is not allowed on /_ping; allowed: GET, HEAD",
            ),
            (
                err("get", "/_ping"),
                405,
                "get is not allowed on /_ping; allowed: GET, HEAD",
            ),
            (
                err("", "/_ping"),
                400,
                "the request method is not a valid HTTP method",
            ),
            (
                err(GET, "/containers/json/"),
                400,
                "the request path ends with '/'; no moat route does",
            ),
            (
                err(GET, "//containers/json"),
                400,
                "the request path has an empty segment ('//')",
            ),
        ];
        for (error, status, message) in cases {
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(error.to_string(), message);
        }
        let long = err(GET, &format!("/{}", "a".repeat(MAX_PATH_LEN)));
        assert_eq!(long.status(), 414);
        assert_eq!(
            long.to_string(),
            format!(
                "the request path is {} bytes long; moat accepts at most {MAX_PATH_LEN}",
                MAX_PATH_LEN + 1
            )
        );
    }
}
