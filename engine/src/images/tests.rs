//! The store as the API uses it: import, tag, resolve, list, inspect,
//! remove, prune, load, save, and interoperability with skopeo and umoci.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::testutil::{self, dir, file, gzip, rootfs_tar, sha256_hex, tar};
use super::*;

const MAP: IdMap = IdMap {
    uid: 100_000,
    gid: 100_000,
    size: 65536,
};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    (dir, store)
}

fn at(seconds: i64) -> ImportConfig {
    ImportConfig {
        created: Some(OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).unwrap()),
        ..ImportConfig::default()
    }
}

fn import(store: &ImageStore, marker: &str, reference: Option<&str>) -> ImageId {
    store
        .import(&rootfs_tar(marker)[..], reference, at(0))
        .unwrap()
}

fn nobody(_: &ImageId) -> bool {
    false
}

fn index_json(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(root.join("images/index.json")).unwrap()).unwrap()
}

fn blob_names(root: &Path) -> HashSet<String> {
    fs::read_dir(root.join("images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn tags(store: &ImageStore, id: &ImageId) -> Vec<String> {
    store.inspect(id.as_str()).unwrap().repo_tags
}

#[test]
fn import_makes_a_one_layer_image_with_docker_config() {
    let (root, store) = store();
    let mut config = ImportConfig {
        created: Some(
            OffsetDateTime::from_unix_timestamp_nanos(1_714_564_800_500_000_000).unwrap(),
        ),
        ..ImportConfig::default()
    };
    for change in [
        r#"CMD ["/bin/hello"]"#,
        "ENV PATH=/bin",
        "WORKDIR /etc",
        "LABEL team=infra",
        "EXPOSE 8080",
    ] {
        config.apply_change(change).unwrap();
    }
    let layer = rootfs_tar("plain");
    let id = store
        .import(&layer[..], Some("busybox:test"), config)
        .unwrap();
    assert_eq!(id.as_str().len(), 71);

    let details = store.inspect("busybox:test").unwrap();
    assert_eq!(details.id, id);
    assert_eq!(details.repo_tags, ["busybox:test"]);
    assert!(details.repo_digests.is_empty());
    assert_eq!(details.architecture, host_architecture());
    assert_eq!(details.os, "linux");
    assert_eq!(
        details.created,
        Some(OffsetDateTime::from_unix_timestamp_nanos(1_714_564_800_500_000_000).unwrap())
    );
    assert_eq!(details.layers, [format!("sha256:{}", sha256_hex(&layer))]);
    assert_eq!(
        details.config.cmd.as_deref(),
        Some(&["/bin/hello".to_owned()][..])
    );
    assert_eq!(details.config.env, ["PATH=/bin"]);
    assert_eq!(details.config.working_dir.as_deref(), Some("/etc"));
    assert_eq!(details.config.labels["team"], "infra");
    assert_eq!(details.config.exposed_ports, ["8080/tcp"]);
    assert_eq!(details.size, layer.len() as u64);
    assert_eq!(details.history.len(), 1);
    assert_eq!(details.history[0].comment, "Imported from -");

    // The image id is the digest of the config blob, as Docker's.
    let config_blob = fs::read(root.path().join("images/blobs/sha256").join(id.hex())).unwrap();
    assert_eq!(sha256_hex(&config_blob), id.hex());
    let config: serde_json::Value = serde_json::from_slice(&config_blob).unwrap();
    assert_eq!(config["architecture"], host_architecture());
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(config["rootfs"]["type"], "layers");

    // The plain tar is stored as it came, as an uncompressed OCI layer.
    let index = index_json(root.path());
    let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_owned();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(root.path().join("images/blobs/sha256").join(&manifest_hex)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{}", sha256_hex(&layer))
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
}

#[test]
fn gzip_imports_keep_the_blob_and_share_the_diff_id() {
    let (root, store) = store();
    let layer = rootfs_tar("gz");
    let compressed = gzip(&layer);
    let plain = store.import(&layer[..], Some("plain"), at(1)).unwrap();
    let gz = store.import(&compressed[..], Some("gz"), at(1)).unwrap();
    // Same content, same time, same config: the same image.
    assert_eq!(plain, gz);
    assert_eq!(tags(&store, &plain), ["plain:latest", "gz:latest"]);
    let other = store.import(&compressed[..], Some("gz2"), at(2)).unwrap();
    let details = store.inspect("gz2").unwrap();
    assert_eq!(details.id, other);
    assert_eq!(details.layers, [format!("sha256:{}", sha256_hex(&layer))]);
    assert!(blob_names(root.path()).contains(&sha256_hex(&compressed)));
    let index = index_json(root.path());
    let gz2 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"][REF_NAME_ANNOTATION] == "docker.io/library/gz2:latest")
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            root.path()
                .join("images/blobs/sha256")
                .join(&gz2["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[test]
fn import_refuses_bad_input_and_stores_nothing() {
    let (root, store) = store();
    let before = blob_names(root.path());
    for (body, reference, expected) in [
        (
            b"not a tar at all, only words and more words".to_vec(),
            None,
            "not a tar",
        ),
        (vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0], None, "zstd"),
        (rootfs_tar("x"), Some("Bad/Name"), "lowercase"),
        (
            rootfs_tar("x"),
            Some("ok@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
            "digest",
        ),
    ] {
        let err = store
            .import(&body[..], reference, ImportConfig::default())
            .unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert_eq!(blob_names(root.path()), before);
    assert_eq!(
        fs::read_dir(root.path().join("images.ingest"))
            .unwrap()
            .count(),
        0
    );
    let small = ImageStore::open(root.path())
        .unwrap()
        .with_max_layer_bytes(1024);
    let err = small
        .import(&rootfs_tar("x")[..], None, ImportConfig::default())
        .unwrap_err();
    assert!(matches!(err, ImageError::LayerTooLarge { .. }), "{err}");
}

#[test]
fn the_index_has_a_descriptor_per_tag_and_keeps_untagged_images() {
    let (root, store) = store();
    let id = import(&store, "a", Some("busybox:test"));
    store
        .tag("busybox:test", "localhost:5000/team/app:1")
        .unwrap();
    let index = index_json(root.path());
    assert_eq!(index["schemaVersion"], 2);
    let names: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["annotations"][REF_NAME_ANNOTATION]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:test",
            "localhost:5000/team/app:1"
        ]
    );
    assert_eq!(
        fs::read_to_string(root.path().join("images/oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );

    // Moving both tags away leaves the image, untagged, in the index.
    let other = import(&store, "b", None);
    store.tag(other.as_str(), "busybox:test").unwrap();
    store
        .tag(other.as_str(), "localhost:5000/team/app:1")
        .unwrap();
    let index = index_json(root.path());
    let untagged: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.get("annotations").is_none())
        .collect();
    assert_eq!(untagged.len(), 1);
    let rows = store.list().unwrap();
    assert_eq!(rows.len(), 2);
    let row = rows.iter().find(|r| r.id == id).unwrap();
    assert!(row.repo_tags.is_empty());
    assert_eq!(row.parent, None);
    assert_eq!(
        tags(&store, &other),
        ["busybox:test", "localhost:5000/team/app:1"]
    );
}

#[test]
fn references_resolve_like_docker() {
    let (root, store) = store();
    let id = import(&store, "a", Some("busybox:test"));
    for name in [
        "busybox:test",
        "docker.io/library/busybox:test",
        "index.docker.io/library/busybox:test",
        id.as_str(),
        id.hex(),
        &id.hex()[..12],
        &id.hex()[..1],
        &format!("sha256:{}", &id.hex()[..5]),
    ] {
        assert_eq!(store.resolve(name).unwrap(), id, "{name}");
    }
    let index = index_json(root.path());
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(store.resolve(&format!("busybox@{manifest}")).unwrap(), id);

    let err = store.resolve("busybox").unwrap_err();
    assert_eq!(err.status(), 404);
    assert_eq!(err.to_string(), "No such image: busybox:latest");
    assert_eq!(store.resolve(&"f".repeat(64)).unwrap_err().status(), 404);
    assert_eq!(store.resolve("Busybox").unwrap_err().status(), 400);

    // 17 images: two of them share a first hex digit.
    let mut ids = vec![id];
    for i in 0..16 {
        ids.push(
            store
                .import(&rootfs_tar("b")[..], None, at(i + 10))
                .unwrap(),
        );
    }
    let shared = ids
        .iter()
        .map(|id| &id.hex()[..1])
        .find(|c| ids.iter().filter(|id| id.hex().starts_with(*c)).count() > 1)
        .unwrap();
    let err = store.resolve(shared).unwrap_err();
    assert!(matches!(err, ImageError::Ambiguous { .. }), "{err}");
    assert_eq!(err.status(), 400);
}

#[test]
fn tags_are_validated_and_move() {
    let (_root, store) = store();
    let a = import(&store, "a", Some("app:1"));
    let b = store
        .import(&rootfs_tar("b")[..], Some("app:2"), at(5))
        .unwrap();
    store.tag("app:2", "app:1").unwrap();
    assert_eq!(store.resolve("app:1").unwrap(), b);
    assert!(tags(&store, &a).is_empty(), "the old image is dangling now");
    for bad in [
        "App:1",
        "app:-x",
        &format!("app@sha256:{}", "0".repeat(64)),
        &"a".repeat(64),
    ] {
        assert_eq!(store.tag("app:2", bad).unwrap_err().status(), 400, "{bad}");
    }
    assert_eq!(store.tag("nope", "app:3").unwrap_err().status(), 404);
}

#[test]
fn list_history_and_inspect() {
    let (_root, store) = store();
    let old = store
        .import(&rootfs_tar("old")[..], Some("old"), at(0))
        .unwrap();
    let mut config = at(100);
    config.message = Some("from a tarball".into());
    config.config.labels.insert("a".into(), "b".into());
    let new = store
        .import(&rootfs_tar("new")[..], Some("new"), config)
        .unwrap();
    let rows = store.list().unwrap();
    assert_eq!(
        rows.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&new, &old],
        "newest first"
    );
    assert_eq!(rows[0].repo_tags, ["new:latest"]);
    assert_eq!(rows[0].labels["a"], "b");
    assert!(rows[0].size > 0);
    let history = store.history("new").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id.as_ref(), Some(&new));
    assert_eq!(history[0].comment, "from a tarball");
    assert_eq!(history[0].tags, ["new:latest"]);
    assert_eq!(history[0].size, rows[0].size);
}

#[test]
fn remove_follows_dockers_rules() {
    if !testutil::is_root() {
        return;
    }
    let (root, store) = store();
    let id = import(&store, "a", Some("app:1"));
    store.tag("app:1", "app:2").unwrap();
    let layers = store.layers_for(&id, &MAP).unwrap();
    assert!(layers[0].is_dir());

    // One of several tags: only untagged.
    assert_eq!(
        store.remove("app:1", false, &nobody).unwrap(),
        [Removed::Untagged("app:1".into())]
    );
    store.tag("app:2", "app:1").unwrap();
    // By id with several tags: must be forced.
    let err = store.remove(&id.hex()[..12], false, &nobody).unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("must be forced"), "{err}");

    // In use: the last tag needs force, and even then the image stays.
    let used = |i: &ImageId| i == &id;
    store.remove("app:1", false, &used).unwrap();
    let err = store.remove("app:2", false, &used).unwrap_err();
    assert_eq!(err.status(), 409);
    assert!(err.to_string().contains("must force"), "{err}");
    assert_eq!(
        store.remove("app:2", true, &used).unwrap(),
        [Removed::Untagged("app:2".into())]
    );
    assert_eq!(store.resolve(id.as_str()).unwrap(), id);
    assert!(layers[0].is_dir(), "a container's layers stay");
    // By id, in use: cannot be forced.
    let err = store.remove(id.as_str(), true, &used).unwrap_err();
    assert!(err.to_string().contains("cannot be forced"), "{err}");

    // Forced by id: every tag, then the image, its blobs and layers.
    store.tag(id.as_str(), "app:1").unwrap();
    store.tag(id.as_str(), "app:2").unwrap();
    let kept = import(&store, "other", Some("other"));
    let removed = store.remove(id.as_str(), true, &nobody).unwrap();
    assert_eq!(
        removed,
        [
            Removed::Untagged("app:1".into()),
            Removed::Untagged("app:2".into()),
            Removed::Deleted(id.clone())
        ]
    );
    assert_eq!(store.resolve(id.as_str()).unwrap_err().status(), 404);
    assert!(!layers[0].exists(), "unpacked layers go with the image");
    assert!(!blob_names(root.path()).contains(id.hex()));
    assert_eq!(store.resolve("other").unwrap(), kept);
    assert_eq!(
        serde_json::to_string(&removed[2]).unwrap(),
        format!(r#"{{"Deleted":"{id}"}}"#)
    );

    // The last tag of an unused image takes the image with it.
    assert_eq!(
        store.remove("other", false, &nobody).unwrap(),
        [
            Removed::Untagged("other:latest".into()),
            Removed::Deleted(kept)
        ]
    );
    let left: Vec<_> = blob_names(root.path()).into_iter().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        store.remove("other", false, &nobody).unwrap_err().status(),
        404
    );
}

#[test]
fn shared_layers_survive_until_their_last_image_goes() {
    if !testutil::is_root() {
        return;
    }
    let (_root, store) = store();
    let a = store
        .import(&rootfs_tar("same")[..], Some("a"), at(1))
        .unwrap();
    let b = store
        .import(&rootfs_tar("same")[..], Some("b"), at(2))
        .unwrap();
    assert_ne!(a, b);
    let dirs_a = store.layers_for(&a, &MAP).unwrap();
    assert_eq!(store.layers_for(&b, &MAP).unwrap(), dirs_a);
    store.remove("a", false, &nobody).unwrap();
    assert!(dirs_a[0].is_dir());
    store.remove("b", false, &nobody).unwrap();
    assert!(!dirs_a[0].exists());
}

#[test]
fn prune_removes_what_no_container_uses() {
    if !testutil::is_root() {
        return;
    }
    let (root, store) = store();
    let dangling = store.import(&rootfs_tar("d")[..], None, at(1)).unwrap();
    let dangling_used = store.import(&rootfs_tar("u")[..], None, at(2)).unwrap();
    let tagged = store
        .import(&rootfs_tar("t")[..], Some("t"), at(3))
        .unwrap();
    let dirs = store.layers_for(&dangling, &MAP).unwrap();
    // A leftover of an interrupted unpack is collected too.
    let leftover = dirs[0]
        .parent()
        .unwrap()
        .join(format!(".tmp-{}", "e".repeat(64)));
    fs::create_dir(&leftover).unwrap();
    let used = |i: &ImageId| i == &dangling_used;
    let (removed, freed) = store.prune(true, &used).unwrap();
    assert_eq!(removed, std::slice::from_ref(&dangling));
    assert!(freed > 0);
    assert!(!dirs[0].exists());
    assert!(!leftover.exists());
    assert!(store.resolve(tagged.as_str()).is_ok());
    let (removed, _) = store.prune(false, &used).unwrap();
    assert_eq!(removed, [tagged]);
    assert_eq!(store.list().unwrap().len(), 1);
    let (removed, freed) = store.prune(false, &nobody).unwrap();
    assert_eq!(removed, [dangling_used]);
    assert!(freed > 0);
    assert!(blob_names(root.path()).is_empty());
}

#[test]
fn layers_for_unpacks_once_per_remap_root() {
    if !testutil::is_root() {
        return;
    }
    let (root, store) = store();
    let id = import(&store, "m", Some("busybox:test"));
    let remapped = store.layers_for(&id, &MAP).unwrap();
    let host = store.layers_for(&id, &IdMap::HOST).unwrap();
    assert_eq!(remapped.len(), 1);
    assert!(remapped[0].starts_with(root.path().join("layers/100000.100000")));
    assert!(host[0].starts_with(root.path().join("layers/0.0")));
    assert_eq!(
        fs::metadata(remapped[0].join("etc/marker")).unwrap().uid(),
        100_000
    );
    assert_eq!(fs::metadata(host[0].join("etc/marker")).unwrap().uid(), 0);
    assert_eq!(fs::read(remapped[0].join("etc/marker")).unwrap(), b"m");
    let inode = fs::metadata(&remapped[0]).unwrap().ino();
    assert_eq!(store.layers_for(&id, &MAP).unwrap(), remapped);
    assert_eq!(
        fs::metadata(&remapped[0]).unwrap().ino(),
        inode,
        "not unpacked again"
    );
    let missing = ImageId::parse(&"0".repeat(64)).unwrap();
    assert_eq!(store.layers_for(&missing, &MAP).unwrap_err().status(), 404);
}

/// The members of a tar, with their contents.
fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

fn member<'a>(members: &'a [(String, Vec<u8>)], path: &str) -> &'a [u8] {
    &members
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("no {path}"))
        .1
}

#[test]
fn save_writes_both_formats_and_load_round_trips() {
    let (_root, store) = store();
    let id = import(&store, "round", Some("busybox:test"));
    store.tag("busybox:test", "busybox:other").unwrap();
    let gz = store
        .import(&gzip(&rootfs_tar("gz"))[..], Some("gz:1"), at(7))
        .unwrap();
    let mut archive = Vec::new();
    store.save(&["busybox", gz.as_str()], &mut archive).unwrap();
    let files = members(&archive);
    let paths: Vec<_> = files.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "oci-layout",
        "index.json",
        "manifest.json",
        "repositories",
        "blobs/",
        "blobs/sha256/",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    // Every blob is what its name says.
    for (path, data) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256_hex(data), hex, "{path}");
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(member(&files, "manifest.json")).unwrap();
    let items = manifest.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["Config"], format!("blobs/sha256/{}", id.hex()));
    assert_eq!(
        items[0]["RepoTags"],
        serde_json::json!(["busybox:test", "busybox:other"])
    );
    assert_eq!(
        items[1]["RepoTags"],
        serde_json::Value::Null,
        "saved by id: no tag"
    );
    // Layers are plain tars, named by their diff ids, even the gzip one.
    let gz_details = store.inspect(gz.as_str()).unwrap();
    assert_eq!(
        items[1]["Layers"][0],
        format!("blobs/sha256/{}", &gz_details.layers[0][7..])
    );
    let repositories: serde_json::Value =
        serde_json::from_slice(member(&files, "repositories")).unwrap();
    assert!(repositories["busybox"]["test"].is_string());

    // The OCI index: Docker ≥ 25's annotations, manifests naming present blobs.
    let index: serde_json::Value = serde_json::from_slice(member(&files, "index.json")).unwrap();
    let descriptors = index["manifests"].as_array().unwrap();
    assert_eq!(descriptors.len(), 3);
    assert_eq!(
        descriptors[0]["annotations"][IMAGE_NAME_ANNOTATION],
        "docker.io/library/busybox:test"
    );
    assert_eq!(descriptors[0]["annotations"][REF_NAME_ANNOTATION], "test");
    for descriptor in descriptors {
        let hex = &descriptor["digest"].as_str().unwrap()[7..];
        let manifest: serde_json::Value =
            serde_json::from_slice(member(&files, &format!("blobs/sha256/{hex}"))).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
            member(
                &files,
                &format!("blobs/sha256/{}", &layer["digest"].as_str().unwrap()[7..]),
            );
        }
    }

    let (_root2, second) = self::store();
    let loaded = second.load(&archive[..]).unwrap();
    assert_eq!(
        loaded,
        [
            LoadedImage {
                id: id.clone(),
                tags: vec!["busybox:test".into(), "busybox:other".into()]
            },
            LoadedImage {
                id: gz.clone(),
                tags: vec![]
            }
        ]
    );
    assert_eq!(second.resolve("busybox:other").unwrap(), id);
    assert_eq!(
        second.inspect(gz.as_str()).unwrap().layers,
        gz_details.layers
    );
    // Loading again changes nothing but the tags.
    let before = blob_names(_root2.path());
    second.load(&archive[..]).unwrap();
    assert_eq!(blob_names(_root2.path()), before);
    // A gzip-compressed archive loads as well.
    let (_root3, third) = self::store();
    third.load(&gzip(&archive)[..]).unwrap();
    assert_eq!(third.resolve("busybox:test").unwrap(), id);
}

#[test]
fn save_selects_like_docker() {
    let (_root, store) = store();
    import(&store, "a", Some("app:1"));
    store.tag("app:1", "app:2").unwrap();
    store.tag("app:1", "other:1").unwrap();
    let saved_tags = |names: &[&str]| {
        let mut archive = Vec::new();
        store.save(names, &mut archive).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(member(&members(&archive), "manifest.json")).unwrap();
        manifest[0]["RepoTags"].clone()
    };
    assert_eq!(saved_tags(&["app"]), serde_json::json!(["app:1", "app:2"]));
    assert_eq!(saved_tags(&["app:2"]), serde_json::json!(["app:2"]));
    assert_eq!(
        saved_tags(&["app:2", "other:1"]),
        serde_json::json!(["app:2", "other:1"])
    );
    let mut sink = Vec::new();
    assert_eq!(
        store.save(&["missing"], &mut sink).unwrap_err().status(),
        404
    );
    assert_eq!(store.save(&[], &mut sink).unwrap_err().status(), 400);
}

/// A docker-archive as dockerd 20.10's `docker save` writes it.
fn legacy_archive(layer: &[u8], config: &[u8], tags: &[&str]) -> Vec<u8> {
    let config_hex = sha256_hex(config);
    let layer_id = "a".repeat(64);
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": tags,
        "Layers": [format!("{layer_id}/layer.tar")],
    }]);
    let repositories = serde_json::json!({"busybox": {"legacy": layer_id}});
    tar(&[
        dir(&format!("{layer_id}/")),
        file(&format!("{layer_id}/VERSION"), b"1.0"),
        file(&format!("{layer_id}/json"), b"{}"),
        file(&format!("{layer_id}/layer.tar"), layer),
        file(&format!("{config_hex}.json"), config),
        file("manifest.json", manifest.to_string().as_bytes()),
        file("repositories", repositories.to_string().as_bytes()),
    ])
}

/// A config as Docker writes it, with the fields OCI does not know.
fn docker_config(layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "config": {"Hostname": "", "Env": ["PATH=/bin"], "Cmd": ["sh"], "Image": "",
                   "Volumes": null, "WorkingDir": "", "Entrypoint": null, "OnBuild": null,
                   "Labels": null},
        "container": "abc",
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"]},
        "created": "2023-05-19T20:19:24.117945128Z",
        "docker_version": "20.10.23",
        "history": [{"created": "2023-05-19T20:19:23.995155862Z", "created_by": "ADD file:x in / "},
                    {"created": "2023-05-19T20:19:24.117945128Z", "created_by": "CMD [\"sh\"]", "empty_layer": true}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(layer))]},
    }))
    .unwrap()
}

#[test]
fn loads_a_legacy_docker_archive() {
    let (_root, store) = store();
    let layer = rootfs_tar("legacy");
    let config = docker_config(&layer);
    let loaded = store
        .load(&legacy_archive(&layer, &config, &["busybox:legacy"])[..])
        .unwrap();
    assert_eq!(loaded[0].id.hex(), sha256_hex(&config));
    assert_eq!(loaded[0].tags, ["busybox:legacy"]);
    let details = store.inspect("busybox:legacy").unwrap();
    assert_eq!(details.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
    assert_eq!(details.config.working_dir, None);
    let history = store.history("busybox:legacy").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].size, history[1].size), (0, layer.len() as u64));
    assert_eq!(history[1].created_by, "ADD file:x in / ");

    // Layers may be gzip in a docker-archive.
    let (_root, store) = self::store();
    let loaded = store
        .load(&legacy_archive(&gzip(&layer), &config, &["busybox:legacy"])[..])
        .unwrap();
    assert_eq!(loaded[0].id.hex(), sha256_hex(&config));
}

#[test]
fn legacy_archives_may_link_identical_layers() {
    let (_root, store) = store();
    let layer = rootfs_tar("shared");
    let config_a = docker_config(&layer);
    let mut config_b = config_a.clone();
    config_b.extend_from_slice(b"\n");
    let (a, b) = (sha256_hex(&config_a), sha256_hex(&config_b));
    let manifest = serde_json::json!([
        {"Config": format!("{a}.json"), "RepoTags": ["a:1"], "Layers": ["l1/layer.tar"]},
        {"Config": format!("{b}.json"), "RepoTags": ["b:1"], "Layers": ["l2/layer.tar"]},
    ]);
    let mut link = testutil::symlink("l2/layer.tar", "../l1/layer.tar");
    link.mode = 0o777;
    let archive = tar(&[
        file("l1/layer.tar", &layer),
        link,
        file(&format!("{a}.json"), &config_a),
        file(&format!("{b}.json"), &config_b),
        file("manifest.json", manifest.to_string().as_bytes()),
    ]);
    let loaded = store.load(&archive[..]).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(store.resolve("b:1").unwrap().hex(), b);
}

/// An OCI archive as skopeo's `oci-archive:` writes it.
fn oci_archive(layer: &[u8], config: &[u8], ref_name: Option<&str>, nested: bool) -> Vec<u8> {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha256_hex(layer)), "size": layer.len()}],
    }))
    .unwrap();
    let mut manifest_descriptor = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", sha256_hex(&manifest)),
        "size": manifest.len(),
    });
    let mut blobs = vec![manifest.clone(), config.to_vec(), layer.to_vec()];
    if nested {
        manifest_descriptor["platform"] =
            serde_json::json!({"architecture": host_architecture(), "os": "linux"});
        let other = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "9".repeat(64)), "size": 1,
            "platform": {"architecture": "s390x", "os": "linux"},
        });
        let inner = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [other, manifest_descriptor],
        }))
        .unwrap();
        manifest_descriptor = serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&inner)),
            "size": inner.len(),
        });
        blobs.push(inner);
    }
    if let Some(name) = ref_name {
        manifest_descriptor["annotations"] = serde_json::json!({REF_NAME_ANNOTATION: name});
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_descriptor]});
    let mut entries = vec![
        file("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#),
        file("index.json", index.to_string().as_bytes()),
    ];
    for blob in blobs {
        entries.push(file(&format!("blobs/sha256/{}", sha256_hex(&blob)), &blob));
    }
    tar(&entries)
}

#[test]
fn loads_oci_archives() {
    let layer = rootfs_tar("oci");
    let gz = gzip(&layer);
    let config = docker_config(&layer);
    let (_root, store) = store();
    let loaded = store
        .load(&oci_archive(&gz, &config, Some("busybox:oci"), false)[..])
        .unwrap();
    assert_eq!(loaded[0].id.hex(), sha256_hex(&config));
    assert_eq!(loaded[0].tags, ["busybox:oci"]);
    // A bare tag names no repository: the image loads untagged.
    let (_root, store) = self::store();
    let loaded = store
        .load(&oci_archive(&gz, &config, Some("latest"), false)[..])
        .unwrap();
    assert!(loaded[0].tags.is_empty());
    assert_eq!(store.list().unwrap().len(), 1);
    // Through an index, the host's platform is chosen.
    let (_root, store) = self::store();
    let loaded = store
        .load(&oci_archive(&gz, &config, Some("docker.io/library/busybox:nested"), true)[..])
        .unwrap();
    assert_eq!(loaded[0].tags, ["busybox:nested"]);
    // Saving it writes the layer uncompressed, and it loads back the same.
    let mut saved = Vec::new();
    store.save(&["busybox:nested"], &mut saved).unwrap();
    let files = members(&saved);
    member(&files, &format!("blobs/sha256/{}", sha256_hex(&layer)));
    let (_root, again) = self::store();
    assert_eq!(again.load(&saved[..]).unwrap()[0].id, loaded[0].id);
}

#[test]
fn a_bad_archive_stores_nothing() {
    let layer = rootfs_tar("bad");
    let config = docker_config(&layer);
    let other_layer = rootfs_tar("other");
    let mut wrong_blob = oci_archive(&layer, &config, Some("a:1"), false);
    // Rename a blob: its content no longer matches its name.
    let mut tampered = Vec::new();
    {
        let mut out = tar::Builder::new(&mut tampered);
        for (path, data) in members(&wrong_blob) {
            let path = if path.ends_with(&sha256_hex(&layer)) {
                format!("blobs/sha256/{}", "1".repeat(64))
            } else {
                path
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            out.append_data(&mut header, path, &data[..]).unwrap();
        }
        out.finish().unwrap();
    }
    wrong_blob = tampered;
    let cases: Vec<(Vec<u8>, &str)> =
        vec![
        (wrong_blob, "digest mismatch"),
        (legacy_archive(&other_layer, &config, &["a:1"]), "digest mismatch"),
        (
            tar(&[
                file("x.json", &config),
                file(
                    "manifest.json",
                    br#"[{"Config":"x.json","RepoTags":["a:1"],"Layers":["missing/layer.tar"]}]"#,
                ),
            ]),
            "missing from the archive",
        ),
        (legacy_archive(&layer, &config, &["Bad:1"]), "lowercase"),
        (tar(&[file("hello", b"world")]), "neither manifest.json nor index.json"),
        (b"garbage that is no tar archive at all".repeat(20), "archive"),
        (tar(&[file("../escape", b"x")]), "'..'"),
    ];
    let (root, store) = store();
    let existing = import(&store, "keep", Some("keep"));
    let blobs = blob_names(root.path());
    let index = fs::read(root.path().join("images/index.json")).unwrap();
    for (archive, expected) in cases {
        let err = store.load(&archive[..]).unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains(expected), "{expected}: {err}");
        assert_eq!(blob_names(root.path()), blobs);
        assert_eq!(
            fs::read(root.path().join("images/index.json")).unwrap(),
            index
        );
        assert_eq!(
            fs::read_dir(root.path().join("images.ingest"))
                .unwrap()
                .count(),
            0
        );
    }
    assert_eq!(store.resolve("keep").unwrap(), existing);
}

#[test]
fn concurrent_changes_lose_nothing() {
    let (_root, store) = store();
    std::thread::scope(|s| {
        for i in 0..4 {
            let store = &store;
            s.spawn(move || {
                let id = store
                    .import(
                        &rootfs_tar(&format!("t{i}"))[..],
                        Some(&format!("t{i}")),
                        at(i),
                    )
                    .unwrap();
                store.tag(id.as_str(), &format!("copy{i}")).unwrap();
            });
        }
    });
    let rows = store.list().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_eq!(row.repo_tags.len(), 2, "{:?}", row.repo_tags);
    }
}

#[test]
fn what_other_tools_add_to_the_layout_survives_collection() {
    let (root, store) = store();
    import(&store, "ours", Some("ours"));
    // A multi-platform index, as `skopeo copy --all` would add it.
    let config = docker_config(&rootfs_tar("theirs"));
    let layer = rootfs_tar("theirs");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha256_hex(&manifest)), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let blobs = root.path().join("images/blobs/sha256");
    for blob in [&config, &layer, &manifest, &index] {
        fs::write(blobs.join(sha256_hex(blob)), blob).unwrap();
    }
    let mut top = index_json(root.path());
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&index)), "size": index.len(),
            "annotations": {REF_NAME_ANNOTATION: "theirs"},
        }));
    fs::write(root.path().join("images/index.json"), top.to_string()).unwrap();

    assert_eq!(
        store.list().unwrap().len(),
        1,
        "only image manifests are images here"
    );
    store.remove("ours", false, &nobody).unwrap();
    store.prune(false, &nobody).unwrap();
    for blob in [&config, &layer, &manifest, &index] {
        assert!(blobs.join(sha256_hex(blob)).exists());
    }
    let names = index_json(root.path())["manifests"].to_string();
    assert!(names.contains("theirs"), "{names}");
}

#[test]
fn error_statuses() {
    let io = ImageError::Io {
        path: PathBuf::from("/x"),
        source: std::io::Error::other("disk"),
    };
    assert_eq!(io.status(), 500);
    assert_eq!(ImageError::not_found("x").status(), 404);
    assert_eq!(
        ImageError::Conflict {
            reference: "x".into(),
            reason: "y".into()
        }
        .status(),
        409
    );
    assert_eq!(ImageError::bad_input("x", "y").status(), 400);
    assert_eq!(ImageError::corrupt("x", "y").status(), 500);
}

/// skopeo and umoci, when installed, must read what the store writes, and
/// the store must load what skopeo writes.
#[test]
fn skopeo_and_umoci_interoperate() {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("skopeo") {
        eprintln!("skipped: skopeo is not installed");
        return;
    }
    let (root, store) = store();
    let mut config = at(0);
    config.apply_change(r#"CMD ["/bin/hello"]"#).unwrap();
    let id = store
        .import(
            &gzip(&rootfs_tar("skopeo"))[..],
            Some("busybox:test"),
            config,
        )
        .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("skopeo")
            .args(["--insecure-policy"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let layout = format!(
        "oci:{}:docker.io/library/busybox:test",
        root.path().join("images").display()
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&run(&["inspect", "--config", &layout])).unwrap();
    assert_eq!(
        inspected["config"]["Cmd"],
        serde_json::json!(["/bin/hello"])
    );

    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("saved.tar");
    store
        .save(&["busybox:test"], fs::File::create(&saved).unwrap())
        .unwrap();
    let docker_archive = format!("docker-archive:{}", saved.display());
    let raw: serde_json::Value =
        serde_json::from_str(&run(&["inspect", "--config", &docker_archive])).unwrap();
    assert_eq!(raw["config"]["Cmd"], serde_json::json!(["/bin/hello"]));
    let oci_archive = format!("oci-archive:{}", saved.display());
    run(&["inspect", &oci_archive]);
    // Copying reads and checks every blob of both parts.
    let copied = work.path().join("copied");
    run(&[
        "copy",
        &docker_archive,
        &format!("dir:{}", copied.display()),
    ]);
    let copied = work.path().join("copied-oci");
    run(&["copy", &oci_archive, &format!("oci:{}:x", copied.display())]);

    // skopeo's own archives load into a store with the same image id.
    for (dest, name) in [
        (
            format!(
                "docker-archive:{}:busybox:skopeo",
                work.path().join("d.tar").display()
            ),
            "busybox:skopeo",
        ),
        (
            format!(
                "oci-archive:{}:docker.io/library/busybox:skopeo",
                work.path().join("o.tar").display()
            ),
            "busybox:skopeo",
        ),
    ] {
        run(&["copy", &layout, &dest]);
        let file = dest.split(':').nth(1).unwrap();
        let (_r, second) = self::store();
        let loaded = second.load(fs::File::open(file).unwrap()).unwrap();
        assert_eq!(loaded[0].id, id, "{dest}");
        assert_eq!(loaded[0].tags, [name]);
    }

    if have("umoci") {
        let umoci = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("umoci").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "umoci {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let images = root.path().join("images");
        let image = format!("{}:docker.io/library/busybox:test", images.display());
        let listed = umoci(&["ls".as_ref(), "--layout".as_ref(), images.as_os_str()]);
        assert!(
            listed.contains("docker.io/library/busybox:test"),
            "{listed}"
        );
        umoci(&["stat".as_ref(), "--image".as_ref(), image.as_ref()]);
        let bundle = work.path().join("bundle");
        umoci(&[
            "unpack".as_ref(),
            "--image".as_ref(),
            image.as_ref(),
            bundle.as_os_str(),
        ]);
        assert_eq!(
            fs::read(bundle.join("rootfs/etc/marker")).unwrap(),
            b"skopeo"
        );
    } else {
        eprintln!("skipped: umoci is not installed");
    }
}
