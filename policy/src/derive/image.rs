//! Calls that name images in their query: pull and import, push, tag,
//! commit, save, build.

use moat_api::Action;
use moat_api::query::Query;

use super::{DeriveError, Needs, single};
use crate::image_ref::{self, ReferenceError};
use crate::permission::Permission;

fn query_error(key: &'static str) -> impl Fn(ReferenceError) -> DeriveError {
    move |e| DeriveError::Query {
        key,
        reason: e.to_string(),
    }
}

/// `image.create`: a pull (`fromImage`, with an optional `tag` that may
/// be a digest) is `image.create` and `image.pull` on the repository; an
/// import (`fromSrc`: `-` for the body, or a URL the engine fetches) is
/// `image.create` on `*`, `image.import` on the source, and `image.name`
/// on `repo` if given.
pub(super) fn create(query: &Query, needs: &mut Needs) -> Result<(), DeriveError> {
    let from_image = single(query, "fromImage")?;
    let from_src = single(query, "fromSrc")?;
    match (from_image, from_src) {
        (Some(_), Some(_)) => Err(DeriveError::Query {
            key: "fromImage",
            reason: "give fromImage or fromSrc, not both".into(),
        }),
        (Some(image), None) => {
            let repository = image_ref::repository(image).map_err(query_error("fromImage"))?;
            if let Some(tag) = single(query, "tag")?.filter(|t| !t.is_empty()) {
                // dockerd replaces the name's tag with this one (or adds
                // the digest): the repository stays, but the value must be
                // a tag or a digest, nothing that could change it.
                let candidate = if tag.contains(':') {
                    format!("{repository}@{tag}")
                } else {
                    format!("{repository}:{tag}")
                };
                image_ref::repository(&candidate).map_err(query_error("tag"))?;
            }
            needs.push(Action::ImageCreate, repository.as_str());
            needs.push(Permission::ImagePull, repository);
            Ok(())
        }
        (None, Some(source)) => {
            needs.push(Action::ImageCreate, "*");
            needs.push(Permission::ImageImport, source);
            named(query, false, needs)
        }
        (None, None) => Err(DeriveError::Query {
            key: "fromImage",
            reason: "give fromImage or fromSrc".into(),
        }),
    }
}

/// `image.name` on the repository `repo` (and `tag`) name, as the engine
/// joins them; `required` when the call means nothing without one.
fn named(query: &Query, required: bool, needs: &mut Needs) -> Result<(), DeriveError> {
    match single(query, "repo")?.filter(|r| !r.is_empty()) {
        Some(repo) => {
            let tag = single(query, "tag")?;
            let repository =
                image_ref::repository_with_tag(repo, tag).map_err(query_error("repo"))?;
            needs.push(Permission::ImageName, repository);
            Ok(())
        }
        None if required => Err(DeriveError::Query {
            key: "repo",
            reason: "no repository given".into(),
        }),
        None => Ok(()),
    }
}

/// `image.push`: on the repository the path names.
pub(super) fn push(image: Option<&str>, needs: &mut Needs) -> Result<(), DeriveError> {
    let image = image.unwrap_or("");
    let repository = image_ref::repository(image).map_err(|e| super::field("name", e))?;
    needs.push(Action::ImagePush, repository);
    Ok(())
}

/// `image.tag`: on the source image as the path names it, and
/// `image.name` on the new name.
pub(super) fn tag(
    image: Option<&str>,
    query: &Query,
    needs: &mut Needs,
) -> Result<(), DeriveError> {
    needs.action(Action::ImageTag, image);
    named(query, true, needs)
}

/// `container.commit`: on the container the `container` parameter names,
/// and `image.name` on the new image's name if given.
pub(super) fn commit(query: &Query, needs: &mut Needs) -> Result<(), DeriveError> {
    let container = single(query, "container")?.filter(|c| !c.is_empty());
    needs.action(Action::ContainerCommit, container);
    named(query, false, needs)
}

/// `image.save`: one requirement per image saved (the path's, or each
/// `names` parameter).
pub(super) fn save(image: Option<&str>, query: &Query, needs: &mut Needs) {
    match image {
        Some(image) => needs.push(Action::ImageSave, image),
        None => {
            let mut any = false;
            for name in query.get_all("names").filter(|n| !n.is_empty()) {
                needs.push(Action::ImageSave, name);
                any = true;
            }
            if !any {
                needs.push(Action::ImageSave, "*");
            }
        }
    }
}

/// What BuildKit's client sends as `remote` when the context comes over
/// its session from the client's own files.
const CLIENT_SESSION: &str = "client-session";

/// `build`: `build.remote` on a remote context, `image.name` on each
/// `t`, `host.network` for `networkmode=host`, `container.cgroup_parent`.
/// The base images a Dockerfile names are in the streamed context, which
/// the gateway does not examine (see docs/policy.md).
pub(super) fn build(query: &Query, needs: &mut Needs) -> Result<(), DeriveError> {
    needs.push(Action::Build, "*");
    // The Dockerfile's FROM and COPY --from name images the engine pulls
    // and runs, and they are inside the streamed context the gateway does
    // not read: a build needs pull and use of any repository, so a role
    // limited to some registries cannot reach others through a build.
    needs.push(Permission::ImagePull, "*");
    needs.push(Permission::ImageUse, "*");
    for name in query.get_all("t").filter(|t| !t.is_empty()) {
        let repository = image_ref::repository(name).map_err(query_error("t"))?;
        needs.push(Permission::ImageName, repository);
    }
    if let Some(remote) = single(query, "remote")?.filter(|r| !r.is_empty() && *r != CLIENT_SESSION)
    {
        needs.push(Permission::BuildRemote, remote);
    }
    match single(query, "networkmode")?.unwrap_or("") {
        "host" => needs.flag(Permission::HostNetwork),
        "" | "default" | "bridge" | "none" => {}
        other => {
            return Err(DeriveError::Query {
                key: "networkmode",
                reason: format!("mode {other:?} is not supported"),
            });
        }
    }
    if let Some(parent) = single(query, "cgroupparent")?.filter(|p| !p.is_empty()) {
        needs.push(Permission::CgroupParent, parent);
    }
    Ok(())
}
