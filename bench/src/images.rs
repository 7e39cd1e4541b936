//! Images over the wire and through the builder, with the real `docker`
//! CLI against moat's engine and dockerd 20.10 (vfs, userns-remap), each
//! on its own Unix socket, started here and stopped after.
//!
//! - `registry`: push and pull of a 100 MiB image (4 layers of 25 MiB of
//!   random bytes, so gzip cannot shrink them) to and from Debian's
//!   `docker-registry` (distribution 2.8) on 127.0.0.1, against `skopeo
//!   copy` between the registry and an OCI layout, and dockerd. Pushes go
//!   to a fresh repository of a registry emptied before each push, so
//!   every blob is uploaded (no HEAD hit, no cross-repo mount); pulls are
//!   of a second image the engines do not hold, removed before each pull.
//! - `rebuild`: `DOCKER_BUILDKIT=0 docker build` of a small multi-stage
//!   Dockerfile with nothing changed (every step a cache hit), moat
//!   against dockerd's classic builder, after one first build on each.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Options;
use crate::cli_run::{
    DOCKERD, Daemon, Host, PODMAN, Pair, busybox_tar, docker, docker_ok, dockerd_with, interleave,
    podman, podman_tmp, start,
};
use crate::stack;
use crate::stats::{Figure, Row, pair_ratio};

const LAYERS: usize = 4;
const LAYER_BYTES: u64 = 25 << 20;

/// `docker-registry serve` on 127.0.0.1, anonymous, its storage under
/// `dir`; killed on drop.
struct Registry {
    port: u16,
    storage: PathBuf,
    child: Child,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        let port = stack::loopback_addr().port();
        let storage = dir.join("storage");
        // No blob descriptor cache: emptying `storage` empties the registry.
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: moat-bench\n",
            storage.display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (bench/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            port,
            storage,
            child,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn empty(&self) {
        let _ = std::fs::remove_dir_all(&self.storage);
    }

    /// The bytes of every blob the registry holds: after a push into an
    /// emptied registry, proof that the whole image went over the wire.
    fn blob_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                })
                .sum()
        }
        walk(&self.storage.join("docker/registry/v2/blobs"))
    }

    fn assert_holds_image(&self, pusher: &str) {
        let bytes = self.blob_bytes();
        assert!(
            bytes >= LAYERS as u64 * LAYER_BYTES,
            "after {pusher}'s push the registry holds only {bytes} bytes of blobs"
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect(what);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

fn sha256(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path), "sha256sum");
    out.split_whitespace().next().unwrap().to_owned()
}

/// A tar at `tar` of `files` files of `LAYER_BYTES` random bytes each,
/// written in `scratch` first.
fn random_tar(scratch: &Path, tar: &Path, files: usize) {
    let content = scratch.join("content");
    std::fs::create_dir_all(&content).unwrap();
    for i in 0..files {
        let mut random = std::fs::File::open("/dev/urandom")
            .unwrap()
            .take(LAYER_BYTES);
        let mut file = std::fs::File::create(content.join(format!("blob{i}"))).unwrap();
        std::io::copy(&mut random, &mut file).unwrap();
    }
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&content)
            .arg("-cf")
            .arg(tar)
            .arg("."),
        "tar",
    );
    std::fs::remove_dir_all(&content).unwrap();
}

/// The tag of the image [`random_archive`] writes.
const RANDOM_TAG: &str = "bench/random:1";

/// A docker-archive (`docker save`'s format) at `DIR/archive.tar` of
/// `LAYERS` uncompressed layers, each one file of `LAYER_BYTES` random
/// bytes, tagged [`RANDOM_TAG`]; and the image's id (its config's digest).
fn random_archive(dir: &Path) -> (PathBuf, String) {
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        let tar = archive.join(format!("{i}.tar"));
        random_tar(dir, &tar, 1);
        diff_ids.push(format!("sha256:{}", sha256(&tar)));
        layers.push(format!("{i}.tar"));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    std::fs::write(archive.join("config.json"), config.to_string()).unwrap();
    let id = format!("sha256:{}", sha256(&archive.join("config.json")));
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [RANDOM_TAG],
        "Layers": layers,
    }]);
    std::fs::write(archive.join("manifest.json"), manifest.to_string()).unwrap();
    let tar = dir.join("archive.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&archive)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar",
    );
    std::fs::remove_dir_all(&archive).unwrap();
    (tar, id)
}

/// An OCI layout at `layout` (tag `1`) of `LAYERS` gzip layers, each one
/// file of `LAYER_BYTES` random bytes: written by [`random_archive`], then
/// copied (and compressed) by skopeo.
fn random_image(dir: &Path, layout: &Path) {
    let (tar, _) = random_archive(dir);
    let _ = std::fs::remove_dir_all(layout);
    run_ok(
        Command::new("skopeo")
            .arg("--insecure-policy")
            .arg("copy")
            .arg(format!("docker-archive:{}", tar.display()))
            .arg(format!("oci:{}:1", layout.display())),
        "skopeo copy docker-archive: oci:",
    );
    std::fs::remove_file(&tar).unwrap();
}

fn skopeo_copy(from: &str, to: &str) {
    run_ok(
        Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ]),
        &format!("skopeo copy {from} {to}"),
    );
}

fn start_moat(options: &Options, work: &Path) -> Daemon {
    let mut cmd = Command::new(&options.moat);
    cmd.arg("--state-root").arg(work.join("moat")).args([
        "engine",
        "--socket",
        "/run/moat-bench-images-engine.sock",
        "--run-root",
        "/run/moat-bench-images-e",
    ]);
    start(
        "moat",
        PathBuf::from("/run/moat-bench-images-engine.sock"),
        cmd,
        &work.join("moat.log"),
    )
    .expect("moat engine")
}

fn start_dockerd(work: &Path, insecure: &[String]) -> Option<Daemon> {
    let flags: Vec<String> = insecure
        .iter()
        .flat_map(|host| ["--insecure-registry".to_owned(), host.clone()])
        .collect();
    dockerd_with(work, "images-dockerd", &flags)
}

fn fresh_work(options: &Options, name: &str) -> PathBuf {
    let work = options.work.join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&options.work, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711)).unwrap();
    work
}

const SKOPEO: &str = "skopeo copy (oci: layout)";

pub fn registry(options: &Options, figures: &mut Vec<Figure>) -> Vec<Row> {
    let work = fresh_work(options, "registry");
    // One registry to push to, emptied before each push; one holding the
    // images to pull, left alone.
    let push_reg = Registry::start(&work.join("push-registry"));
    let pull_reg = Registry::start(&work.join("pull-registry"));
    let (push_host, pull_host) = (push_reg.host(), pull_reg.host());

    eprintln!(
        "registry: writing two images of {LAYERS} x {} MiB random layers",
        LAYER_BYTES >> 20
    );
    let pushed_layout = work.join("pushed-layout");
    let pulled_layout = work.join("pulled-layout");
    random_image(&work.join("pushed"), &pushed_layout);
    random_image(&work.join("pulled"), &pulled_layout);
    let base = format!("{pull_host}/bench/base:1");
    let pulled = format!("{pull_host}/bench/pulled:1");
    skopeo_copy(
        &format!("oci:{}:1", pushed_layout.display()),
        &format!("docker://{base}"),
    );
    skopeo_copy(
        &format!("oci:{}:1", pulled_layout.display()),
        &format!("docker://{pulled}"),
    );

    let moat = start_moat(options, &work);
    let dockerd = start_dockerd(&work, &[push_host.clone(), pull_host.clone()]);
    let mut engines: Vec<&Daemon> = vec![&moat];
    engines.extend(dockerd.as_ref());
    for engine in &engines {
        docker_ok(&engine.socket, &["pull", "-q", &base]);
    }

    let push = |socket: &Path, repo: &str| -> Duration {
        push_reg.empty();
        let target = format!("{push_host}/{repo}:1");
        docker_ok(socket, &["tag", &base, &target]);
        let (elapsed, _) = timed(|| docker_ok(socket, &["push", &target]));
        push_reg.assert_holds_image(&socket.display().to_string());
        docker_ok(socket, &["rmi", &target]);
        elapsed
    };
    let skopeo_push = |repo: &str| -> Duration {
        push_reg.empty();
        let (elapsed, _) = timed(|| {
            skopeo_copy(
                &format!("oci:{}:1", pushed_layout.display()),
                &format!("docker://{push_host}/{repo}:1"),
            )
        });
        push_reg.assert_holds_image("skopeo");
        elapsed
    };
    let pull = |socket: &Path| -> Duration {
        let _ = docker(socket, &["rmi", &pulled]);
        let (elapsed, out) = timed(|| docker_ok(socket, &["pull", &pulled]));
        assert!(
            !out.contains("Already exists"),
            "a layer was still in {}: {out}",
            socket.display()
        );
        elapsed
    };
    let pull_dir = work.join("skopeo-pull");
    let skopeo_pull = || -> Duration {
        let _ = std::fs::remove_dir_all(&pull_dir);
        timed(|| {
            skopeo_copy(
                &format!("docker://{pulled}"),
                &format!("oci:{}:1", pull_dir.display()),
            )
        })
        .0
    };

    // Warm up once each, then A B C, A B C ... run by run.
    push(&moat.socket, "bench/warm-moat");
    skopeo_push("bench/warm-skopeo");
    pull(&moat.socket);
    skopeo_pull();
    if let Some(d) = &dockerd {
        push(&d.socket, "bench/warm-dockerd");
        pull(&d.socket);
    }
    let mut moat_push = Vec::new();
    let mut moat_pull = Vec::new();
    let mut peer_push = vec![Vec::new(); 2];
    let mut peer_pull = vec![Vec::new(); 2];
    eprint!("registry push and pull: {} runs ", options.runs);
    for run in 0..options.runs {
        moat_push.push(push(&moat.socket, &format!("bench/moat-{run}")));
        peer_push[0].push(skopeo_push(&format!("bench/skopeo-{run}")));
        if let Some(d) = &dockerd {
            peer_push[1].push(push(&d.socket, &format!("bench/dockerd-{run}")));
        }
        moat_pull.push(pull(&moat.socket));
        peer_pull[0].push(skopeo_pull());
        if let Some(d) = &dockerd {
            peer_pull[1].push(pull(&d.socket));
        }
        eprint!(".");
    }
    eprintln!();

    let mut rows = Vec::new();
    for (scenario, moat_samples, peers) in [
        ("registry push 100 MiB", moat_push, peer_push),
        ("registry pull 100 MiB", moat_pull, peer_pull),
    ] {
        for (name, samples) in [SKOPEO, DOCKERD].into_iter().zip(peers) {
            if samples.is_empty() {
                continue;
            }
            let row = Row {
                scenario: scenario.into(),
                peer: name.into(),
                moat: moat_samples.clone(),
                other: samples,
            };
            if name == SKOPEO {
                figures.push(
                    Figure::new(
                        scenario,
                        "moat / skopeo copy (median per-pair)",
                        pair_ratio(&row),
                        "x",
                    )
                    .runs(options.runs)
                    .at_most(1.2, "1.2x"),
                );
            }
            rows.push(row);
        }
    }
    drop(dockerd);
    drop(moat);
    rows
}

/// The `image` scenario: `docker load -i` of [`random_archive`]'s 100
/// MiB image, `docker save -o` of it, and `docker import` of a 100 MiB
/// rootfs tar, moat's engine against dockerd and Podman's API service,
/// each on its own Unix socket. Each run is checked: the loaded image has
/// the archive's id and four layers, the saved archive holds at least 100
/// MiB and every layer its manifest names, the imported image holds 100
/// MiB in one layer. The image is removed (and its absence checked) before
/// each load, the saved file and the imported image after each run, all
/// outside the timing.
pub fn archive(options: &Options) -> Vec<Row> {
    let work = fresh_work(options, "image");
    eprintln!(
        "image: writing an image of {LAYERS} x {} MiB random layers and a rootfs tar of as many files",
        LAYER_BYTES >> 20
    );
    let (archive, id) = random_archive(&work.join("random"));
    let rootfs = work.join("rootfs.tar");
    random_tar(&work, &rootfs, LAYERS);
    let (archive, rootfs) = (path(&archive), path(&rootfs));
    let saved = work.join("saved.tar");
    let bytes = LAYERS as u64 * LAYER_BYTES;

    let moat = start_moat(options, &work);
    let dockerd = start_dockerd(&work, &[]);
    let podman = podman(&work, "image-podman");
    let podman_tmp = podman_tmp(&work, "image-podman");
    let pairs = |scenario: &str| -> Vec<Pair> {
        [(DOCKERD, &dockerd), (PODMAN, &podman)]
            .into_iter()
            .filter_map(|(peer, daemon)| {
                Some(Pair {
                    scenario: scenario.into(),
                    peer,
                    moat: Host::Unix(&moat.socket),
                    other: Host::Unix(&daemon.as_ref()?.socket),
                })
            })
            .collect()
    };
    let inspect = |host: Host, image: &str| {
        docker_ok(
            host,
            &[
                "image",
                "inspect",
                "--format",
                "{{.Id}} {{len .RootFS.Layers}} {{.Size}}",
                image,
            ],
        )
    };

    let load = |host: Host| -> Duration {
        let _ = docker(host, &["rmi", "-f", RANDOM_TAG]);
        assert!(
            !docker(host, &["image", "inspect", RANDOM_TAG])
                .status
                .success(),
            "{RANDOM_TAG} is still on {host} after docker rmi"
        );
        let (elapsed, _) = timed(|| docker_ok(host, &["load", "-i", archive]));
        let loaded = inspect(host, RANDOM_TAG);
        assert!(
            loaded.starts_with(&format!("{id} {LAYERS} ")),
            "docker load on {host} made {loaded}, not {id} with {LAYERS} layers"
        );
        elapsed
    };
    let save = |host: Host| -> Duration {
        if !docker(host, &["image", "inspect", RANDOM_TAG])
            .status
            .success()
        {
            docker_ok(host, &["load", "-i", archive]);
        }
        let _ = std::fs::remove_file(&saved);
        let (elapsed, _) = timed(|| docker_ok(host, &["save", "-o", path(&saved), RANDOM_TAG]));
        check_saved(&saved, bytes, &id, &host.to_string());
        std::fs::remove_file(&saved).unwrap();
        elapsed
    };
    let import = |host: Host| -> Duration {
        let (elapsed, new) = timed(|| docker_ok(host, &["import", rootfs, "bench/imported:1"]));
        let imported = inspect(host, "bench/imported:1");
        let fields: Vec<&str> = imported.split(' ').collect();
        assert!(
            new.ends_with(fields[0].trim_start_matches("sha256:"))
                && fields[1] == "1"
                && fields[2].parse::<u64>().is_ok_and(|size| size >= bytes),
            "docker import on {host} printed {new:?} and made {imported} (id, layers, size)"
        );
        docker_ok(host, &["rmi", "bench/imported:1"]);
        // Podman's API leaves the upload it spooled in its TMPDIR.
        for spooled in std::fs::read_dir(&podman_tmp)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(spooled.path());
        }
        elapsed
    };

    let mut rows = interleave(
        "docker load 100 MiB",
        options.runs,
        pairs("docker load 100 MiB"),
        load,
    );
    rows.extend(interleave(
        "docker save 100 MiB",
        options.runs,
        pairs("docker save 100 MiB"),
        save,
    ));
    rows.extend(interleave(
        "docker import 100 MiB",
        options.runs,
        pairs("docker import 100 MiB"),
        import,
    ));
    drop(podman);
    drop(dockerd);
    drop(moat);
    rows
}

/// Checks that `docker save` on `host` wrote a docker-archive of the image
/// `id` at `tar`: at least `bytes` long, its `manifest.json` naming the
/// config of `id` and `LAYERS` layers, every one of them in the tar.
fn check_saved(tar: &Path, bytes: u64, id: &str, host: &str) {
    let size = std::fs::metadata(tar).map_or(0, |m| m.len());
    assert!(
        size >= bytes,
        "docker save on {host} wrote {size} bytes, less than the image's {bytes}"
    );
    let listing = run_ok(Command::new("tar").arg("-tf").arg(tar), "tar -tf");
    let members: HashSet<&str> = listing
        .lines()
        .map(|m| m.trim_start_matches("./"))
        .collect();
    let manifest_member = listing
        .lines()
        .find(|m| m.trim_start_matches("./") == "manifest.json")
        .unwrap_or_else(|| panic!("docker save on {host} wrote no manifest.json: {listing}"));
    let manifest = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(tar)
            .arg(manifest_member),
        "the saved manifest.json",
    );
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest.json");
    let image = &manifest[0];
    let layers: Vec<&str> = image["Layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l.as_str()).collect())
        .unwrap_or_default();
    assert!(
        image["Config"]
            .as_str()
            .is_some_and(|c| c.contains(id.trim_start_matches("sha256:")))
            && layers.len() == LAYERS
            && layers.iter().all(|l| members.contains(l)),
        "docker save on {host}: manifest {manifest}, members {members:?}"
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const DOCKERFILE: &str = "\
FROM busybox:test AS build
WORKDIR /src
COPY . .
RUN mkdir -p /out && cat *.txt > /out/all.txt && wc -c /out/all.txt
ARG FLAVOUR=plain
RUN echo $FLAVOUR > /out/flavour

FROM busybox:test
LABEL org.example.bench=rebuild
ENV GREETING=hello
WORKDIR /app
COPY --from=build /out/ /app/
COPY a.txt /app/a.txt
EXPOSE 8080
CMD [\"cat\", \"/app/all.txt\"]
";

/// The steps of `DOCKERFILE` other than its two `FROM`s.
const CACHED_STEPS: usize = 12;

pub fn rebuild(options: &Options) -> Vec<Row> {
    let work = fresh_work(options, "rebuild");
    let tar = busybox_tar(&work);
    let context = work.join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
    for (i, name) in ["a.txt", "b.txt", "c.txt"].iter().enumerate() {
        std::fs::write(context.join(name), format!("file {i}\n").repeat(1000)).unwrap();
    }

    let moat = start_moat(options, &work);
    let dockerd = start_dockerd(&work, &[]);
    let mut engines: Vec<(&str, &Daemon)> = vec![("moat", &moat)];
    engines.extend(dockerd.as_ref().map(|d| (DOCKERD, d)));
    for (_, engine) in &engines {
        docker_ok(
            &engine.socket,
            &["import", tar.to_str().unwrap(), "busybox:test"],
        );
    }
    let context_arg = context.to_str().unwrap().to_owned();
    let build = |socket: &Path| -> (Duration, String) {
        let (elapsed, out) = timed(|| {
            Command::new("docker")
                .env("DOCKER_HOST", format!("unix://{}", socket.display()))
                .env("DOCKER_CONFIG", "/var/tmp/moat-bench-docker-config")
                .env("DOCKER_BUILDKIT", "0")
                .args([
                    "build",
                    "--network",
                    "none",
                    "-t",
                    "bench/rebuild:1",
                    &context_arg,
                ])
                .stdin(Stdio::null())
                .output()
                .expect("docker build")
        });
        assert!(
            out.status.success(),
            "docker build on {}: {}",
            socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut first = Vec::new();
    for (_, engine) in &engines {
        first.push(build(&engine.socket).0);
    }
    let rebuild_once = |socket: &Path| -> Duration {
        let (elapsed, out) = build(socket);
        assert!(
            !out.contains("Running in") && out.matches("Using cache").count() == CACHED_STEPS,
            "a rebuild on {} did not take every step from the cache: {out}",
            socket.display()
        );
        elapsed
    };
    let mut rows = Vec::new();
    if let Some(d) = &dockerd {
        rows.push(Row {
            scenario: "first docker build (uncached)".into(),
            peer: "dockerd 20.10 classic builder".into(),
            moat: vec![first[0]],
            other: vec![first[1]],
        });
        rebuild_once(&moat.socket);
        rebuild_once(&d.socket);
        let (mut m, mut p) = (Vec::new(), Vec::new());
        eprint!("no-change rebuild: {} runs ", options.runs);
        for _ in 0..options.runs {
            m.push(rebuild_once(&moat.socket));
            p.push(rebuild_once(&d.socket));
            eprint!(".");
        }
        eprintln!();
        rows.push(Row {
            scenario: "no-change docker build".into(),
            peer: "dockerd 20.10 classic builder".into(),
            moat: m,
            other: p,
        });
    }
    drop(dockerd);
    drop(moat);
    rows
}
