//! Pull, push and login against a real registry (Debian's
//! `docker-registry`, distribution 2.8, on 127.0.0.1), with the real
//! docker CLI against a real `moat engine`, and skopeo on the other side.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::engine::EngineProcess;
use common::gateway::GatewayProcess;
use common::registry::RegistryProcess;
use serde_json::Value;

fn engine_with_busybox() -> EngineProcess {
    let engine = EngineProcess::start();
    engine.import_busybox();
    engine
}

/// `1: digest: sha256:... size: N` of a push's output.
fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in {output}"))
        .to_owned()
}

/// `docker ARGS` that must fail: its output.
fn docker_fails(engine: &EngineProcess, args: &[&str]) -> String {
    let out = engine.docker(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "docker {args:?} succeeded: {text}");
    text
}

/// `docker login` with the password on stdin, run by `docker` (a docker
/// CLI command pointed at an engine or a gateway); success and output.
fn docker_login(mut docker: Command, host: &str, user: &str, password: &str) -> (bool, String) {
    let mut child = docker
        .args(["login", "-u", user, "--password-stdin", host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn curl_json(url: &str, accept: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sSf", "-H", &format!("Accept: {accept}"), url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn no_image_left(engine: &EngineProcess) {
    assert_eq!(engine.docker_ok(&["images", "-q"]), "");
}

#[test]
fn push_rmi_pull_and_run_with_an_anonymous_registry() {
    let registry = RegistryProcess::anonymous();
    let engine = engine_with_busybox();
    let image = format!("{}/team/app:1", registry.host());
    engine.docker_ok(&["tag", "busybox:test", &image]);

    let out = engine.docker_ok(&["push", &image]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/team/app]",
            registry.host()
        )),
        "{out}"
    );
    assert!(
        out.contains("Pushed") && out.contains("1: digest: sha256:"),
        "{out}"
    );
    let digest = pushed_digest(&out);
    // The registry has what moat stored, byte for byte: the same digest.
    let stored = engine.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]);
    assert!(stored.starts_with("sha256:"), "{stored}");

    // Again: nothing to upload. To another repository: mounted, not sent.
    let out = engine.docker_ok(&["push", &image]);
    assert!(out.contains("Layer already exists"), "{out}");
    let other = format!("{}/team/other:2", registry.host());
    engine.docker_ok(&["tag", "busybox:test", &other]);
    let out = engine.docker_ok(&["push", &other]);
    assert!(out.contains("Mounted from team/app"), "{out}");
    assert_eq!(pushed_digest(&out), digest);

    engine.docker_ok(&["rmi", &image, &other, "busybox:test"]);
    no_image_left(&engine);
    let out = docker_fails(&engine, &["push", &image]);
    assert!(
        out.contains(&format!(
            "An image does not exist locally with the tag: {}/team/app",
            registry.host()
        )),
        "{out}"
    );

    let out = engine.docker_ok(&["pull", &image]);
    assert!(out.contains("1: Pulling from team/app"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {image}")),
        "{out}"
    );
    let repo_digests =
        engine.docker_ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &image]);
    assert_eq!(
        repo_digests.trim(),
        format!(r#"["{}/team/app@{digest}"]"#, registry.host())
    );
    let out = engine.docker_ok(&["pull", &image]);
    assert!(out.contains("Status: Image is up to date"), "{out}");
    assert!(out.contains("Already exists"), "{out}");
    assert_eq!(
        engine.docker_ok(&["image", "inspect", "-f", "{{.Id}}", &image]),
        stored
    );
    assert_eq!(
        engine.docker_ok(&["run", "--rm", &image, "echo", "hi"]),
        "hi\n"
    );

    // By digest, and `docker run` pulling what is missing by itself.
    engine.docker_ok(&["rmi", &image]);
    let by_digest = format!("{}/team/app@{digest}", registry.host());
    engine.docker_ok(&["pull", &by_digest]);
    assert_eq!(
        engine.docker_ok(&["run", "--rm", &by_digest, "echo", "pinned"]),
        "pinned\n"
    );
    let out = engine.docker_ok(&["run", "--rm", &other, "echo", "auto"]);
    assert_eq!(out, "auto\n");
}

#[test]
fn login_then_push_and_pull_with_basic_auth() {
    let registry = RegistryProcess::with_login("alice", "correct horse");
    let engine = engine_with_busybox();
    let host = registry.host();
    let image = format!("{host}/team/app:1");
    engine.docker_ok(&["tag", "busybox:test", &image]);

    let out = docker_fails(&engine, &["push", &image]);
    assert!(out.contains("unauthorized"), "{out}");

    let (ok, out) = docker_login(engine.docker_cmd(), &host, "alice", "wrong");
    assert!(!ok, "a wrong password logged in: {out}");
    assert!(out.contains("401 Unauthorized"), "{out}");
    let (ok, out) = docker_login(engine.docker_cmd(), &host, "alice", "correct horse");
    assert!(ok && out.contains("Login Succeeded"), "{out}");

    let out = engine.docker_ok(&["push", &image]);
    assert!(out.contains("Pushed"), "{out}");
    engine.docker_ok(&["rmi", &image, "busybox:test"]);
    no_image_left(&engine);
    let out = engine.docker_ok(&["pull", &image]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", &image, "echo", "hi"]),
        "hi\n"
    );

    engine.docker_ok(&["logout", &host]);
    engine.docker_ok(&["rmi", &image]);
    let out = docker_fails(&engine, &["pull", &image]);
    assert!(out.contains("unauthorized"), "{out}");
    no_image_left(&engine);
}

#[test]
fn bearer_tokens_from_a_token_service_over_tls() {
    let registry = RegistryProcess::with_token_service("alice", "correct horse");
    let engine = engine_with_busybox();
    let host = registry.host();
    let image = format!("{host}/team/app:1");
    engine.docker_ok(&["tag", "busybox:test", &image]);

    // The registry speaks TLS only and wants a token.
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{host}/v2/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // Anonymous tokens grant nothing here.
    let out = docker_fails(&engine, &["push", &image]);
    assert!(out.contains("unauthorized"), "{out}");
    let (ok, out) = docker_login(engine.docker_cmd(), &host, "alice", "wrong");
    assert!(!ok && out.contains("401 Unauthorized"), "{out}");
    let (ok, out) = docker_login(engine.docker_cmd(), &host, "alice", "correct horse");
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    // The CLI keeps the refresh token the engine handed back, not the
    // password, and sends it from now on.
    let config = std::fs::read_to_string(engine.path("docker-config/config.json")).unwrap();
    assert!(config.contains("identitytoken"), "{config}");
    assert!(!config.contains("correct horse"), "{config}");

    let out = engine.docker_ok(&["push", &image]);
    assert!(out.contains("Pushed"), "{out}");
    let other = format!("{host}/team/other:1");
    engine.docker_ok(&["tag", &image, &other]);
    let out = engine.docker_ok(&["push", &other]);
    assert!(out.contains("Mounted from team/app"), "{out}");
    engine.docker_ok(&["rmi", &image, &other, "busybox:test"]);
    let out = engine.docker_ok(&["pull", &image]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", &image, "echo", "hi"]),
        "hi\n"
    );
}

#[test]
fn login_push_and_pull_through_the_gateway_as_its_policy_allows() {
    let registry = RegistryProcess::with_login("alice", "correct horse");
    let gw = GatewayProcess::start();
    let host = registry.host();
    let operator = gw.issue("olivia", &["operator"]);
    let developer = gw.issue("dave", &["developer"]);
    let image = format!("{host}/team/app:1");
    gw.docker_ok(&operator, &["tag", "busybox:test", &image]);

    // docker login's body and X-Registry-Auth cross the gateway.
    let (ok, out) = docker_login(gw.docker_cmd(&operator), &host, "alice", "correct horse");
    assert!(ok, "{out}");
    let out = gw.docker_ok(&operator, &["push", &image]);
    assert!(out.contains("Pushed"), "{out}");
    gw.docker_ok(&operator, &["rmi", &image]);
    let out = gw.docker_ok(&operator, &["pull", &image]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        gw.docker_ok(&operator, &["run", "--rm", &image, "echo", "hi"]),
        "hi\n"
    );

    // docker login is audited, without its password.
    let audit = serde_json::to_string(&gw.audit_records()).unwrap();
    assert!(audit.contains("\"auth\""), "{audit}");
    assert!(!audit.contains("correct horse"), "{audit}");

    // A developer pulls only from Docker Hub's library and pushes nothing.
    let err = gw.docker_err(&developer, &["pull", &image]);
    assert!(err.contains("dave may not"), "{err}");
    let err = gw.docker_err(&developer, &["push", &image]);
    assert!(err.contains("dave may not"), "{err}");
}

#[test]
fn skopeo_reads_what_moat_pushes_and_moat_runs_what_skopeo_pushes() {
    let registry = RegistryProcess::anonymous();
    let engine = engine_with_busybox();
    let host = registry.host();
    let work = engine.path("skopeo");
    std::fs::create_dir_all(&work).unwrap();

    // moat → skopeo.
    let image = format!("{host}/team/app:1");
    engine.docker_ok(&["tag", "busybox:test", &image]);
    let digest = pushed_digest(&engine.docker_ok(&["push", &image]));
    let inspect: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);
    let layout = format!("oci:{}:app", work.join("layout").display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &layout,
    ]);

    // skopeo → moat: a docker-archive as Docker schema2 with gzip layers,
    // and as an OCI manifest with gzip layers.
    let archive = work.join("busybox.tar");
    engine.docker_ok(&["save", "-o", archive.to_str().unwrap(), "busybox:test"]);
    let v2s2 = format!("{host}/skopeo/v2s2:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{v2s2}"),
    ]);
    let oci = format!("{host}/skopeo/oci:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress",
        "--format",
        "oci",
        &format!("docker-archive:{}", archive.display()),
        &format!("docker://{oci}"),
    ]);
    let manifest = curl_json(
        &format!("http://{host}/v2/skopeo/v2s2/manifests/1"),
        MANIFEST_TYPES,
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let manifest = curl_json(
        &format!("http://{host}/v2/skopeo/oci/manifests/1"),
        MANIFEST_TYPES,
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    engine.docker_ok(&["rmi", &image, "busybox:test"]);
    no_image_left(&engine);
    for pulled in [&v2s2, &oci] {
        let out = engine.docker_ok(&["pull", pulled]);
        assert!(out.contains("Downloaded newer image"), "{out}");
        assert_eq!(
            engine.docker_ok(&["run", "--rm", pulled, "echo", "interop"]),
            "interop\n"
        );
    }
    // moat pushes a pulled schema2 image as schema2, same digest.
    let again = format!("{host}/team/again:1");
    engine.docker_ok(&["tag", &v2s2, &again]);
    let out = engine.docker_ok(&["push", &again]);
    let v2s2_digest: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{v2s2}"),
    ]))
    .unwrap();
    assert_eq!(pushed_digest(&out), v2s2_digest["Digest"].as_str().unwrap());
}

#[test]
fn a_multi_platform_index_gives_the_hosts_image() {
    let registry = RegistryProcess::anonymous();
    let engine = engine_with_busybox();
    let host = registry.host();
    let tar = engine.busybox_tar();
    engine.docker_ok(&[
        "import",
        "--change",
        "ENV VARIANT=other",
        tar.to_str().unwrap(),
        "busybox:other",
    ]);
    let mut entries = Vec::new();
    for (tag, source, arch) in [
        ("a", "busybox:other", "arm64"),
        ("b", "busybox:test", "amd64"),
    ] {
        let image = format!("{host}/team/multi:{tag}");
        engine.docker_ok(&["tag", source, &image]);
        engine.docker_ok(&["push", &image]);
        let out = Command::new("curl")
            .args([
                "-sSf",
                "-H",
                &format!("Accept: {MANIFEST_TYPES}"),
                &format!("http://{host}/v2/team/multi/manifests/{tag}"),
            ])
            .output()
            .unwrap();
        let digest = format!("sha256:{}", sha256_hex(&out.stdout));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": out.stdout.len(),
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let index_path = engine.path("index.json");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = Command::new("curl")
        .args([
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
            &format!("@{}", index_path.display()),
            &format!("http://{host}/v2/team/multi/manifests/latest"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    engine.docker_ok(&["rmi", "busybox:other", "busybox:test"]);
    let multi = format!("{host}/team/multi:latest");
    let out = engine.docker_ok(&["pull", &multi]);
    // The index's digest is the one shown, kept and found.
    let index_digest = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(&index_path).unwrap())
    );
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    let pinned = format!("{host}/team/multi@{index_digest}");
    assert_eq!(
        engine.docker_ok(&["run", "--rm", &pinned, "sh", "-c", "echo ${VARIANT:-host}"]),
        "host\n"
    );
    let variant = engine.docker_ok(&["run", "--rm", &multi, "sh", "-c", "echo ${VARIANT:-host}"]);
    assert_eq!(variant, "host\n");
    // The arm64 entry's config says amd64: asked for arm64, that is refused.
    let out = docker_fails(&engine, &["pull", "--platform", "linux/arm64", &multi]);
    assert!(
        out.contains("does not match the specified platform"),
        "{out}"
    );
    let out = docker_fails(&engine, &["pull", "--platform", "linux/s390x", &multi]);
    assert!(
        out.contains("no matching manifest for linux/s390x"),
        "{out}"
    );
}

#[test]
fn a_corrupted_blob_fails_the_pull_and_stores_nothing() {
    let registry = RegistryProcess::anonymous();
    let engine = engine_with_busybox();
    let host = registry.host();
    let image = format!("{host}/team/app:1");
    engine.docker_ok(&["tag", "busybox:test", &image]);
    engine.docker_ok(&["push", &image]);
    let manifest = curl_json(
        &format!("http://{host}/v2/team/app/manifests/1"),
        MANIFEST_TYPES,
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let data = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    engine.docker_ok(&["rmi", &image, "busybox:test"]);
    no_image_left(&engine);
    let out = docker_fails(&engine, &["pull", &image]);
    assert!(out.contains("digest mismatch"), "{out}");
    assert!(out.contains(&layer), "{out}");
    no_image_left(&engine);
    let store = engine.path("state/engine");
    let hex = layer.trim_start_matches("sha256:");
    assert!(!store.join("images/blobs/sha256").join(hex).exists());
    assert_eq!(entries(&store.join("images.ingest")), 0);
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Issue 7's flow through the gateway: a CI identity whose role may build,
/// and push only to `team/*`, builds a multi-stage image for the registry,
/// runs it, pushes it, removes it, pulls it and runs it again; it is
/// refused a push outside `team/*`, and a developer is refused a pull from
/// a registry their role does not list.
#[test]
fn build_push_pull_and_run_through_the_gateway_within_the_policy() {
    let registry = RegistryProcess::anonymous();
    let gw = GatewayProcess::start();
    let host = registry.host();
    let admin = gw.issue("root", &["admin"]);
    let developer = gw.issue("dave", &["developer"]);
    let ci = gw.issue("ci", &["ci"]);

    let policy = gw.state().join("policy/policy.csv");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str(&format!(
        "\n# A CI role: builds (which pulls anything), pushes only to team/*.\n\
         g, group:ci, ci\ng, ci, developer\n\
         p, ci, build, *, allow\np, ci, image.create, *, allow\np, ci, image.pull, *, allow\np, ci, image.use, *, allow\n\
         p, ci, image.name, {host}/team/*, allow\np, ci, image.push, {host}/team/*, allow\n\
         p, ci, image.remove, {host}/team/*, allow\n"
    ));
    std::fs::write(&policy, text).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gw.log().contains("reloaded the policy") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM busybox:test AS build\nRUN echo built in stage one > /out.txt\n\
         FROM busybox:test\nCOPY --from=build /out.txt /out.txt\nCMD [\"cat\", \"/out.txt\"]\n",
    )
    .unwrap();
    let image = format!("{host}/team/app:1");
    let out = gw
        .docker_cmd(&ci)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", &image])
        .arg(context.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        gw.docker_ok(&ci, &["run", "--rm", &image]),
        "built in stage one\n"
    );
    let pushed = gw.docker_ok(&ci, &["push", &image]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    gw.docker_ok(&ci, &["rmi", &image]);
    let pulled = gw.docker_ok(&ci, &["pull", &image]);
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert_eq!(
        gw.docker_ok(&ci, &["run", "--rm", &image]),
        "built in stage one\n"
    );

    // Outside team/*: the admin names it, the CI identity may not push it.
    let elsewhere = format!("{host}/other/app:1");
    gw.docker_ok(&admin, &["tag", &image, &elsewhere]);
    let err = gw.docker_err(&ci, &["push", &elsewhere]);
    assert!(err.contains("ci may not image.push"), "{err}");

    // A developer pulls from Docker Hub's library only.
    let err = gw.docker_err(&developer, &["pull", &image]);
    assert!(
        err.contains("dave may not") && err.contains(&format!("image.pull:{host}/team/app")),
        "{err}"
    );
}
