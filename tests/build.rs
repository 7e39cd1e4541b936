//! `docker build` with the real docker CLI (the classic builder:
//! `DOCKER_BUILDKIT=0`, or no buildx installed) against a real `moat
//! engine`: a multi-stage Dockerfile, the cache, build args, bad
//! Dockerfiles that must fail on their line and leave nothing, `RUN`'s
//! isolation, and an image built, pushed to and pulled from a registry.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Instant;

use common::engine::EngineProcess;
use common::gateway::GatewayProcess;
use common::registry::RegistryProcess;

fn engine_with_busybox() -> EngineProcess {
    let engine = EngineProcess::start();
    engine.import_busybox();
    engine
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `docker build ARGS CONTEXT` with the classic builder.
fn build(engine: &EngineProcess, context: &Path, args: &[&str]) -> Output {
    engine
        .docker_cmd()
        .env("DOCKER_BUILDKIT", "0")
        .arg("build")
        .args(args)
        .arg(context)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run docker build")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn build_ok(engine: &EngineProcess, context: &Path, args: &[&str]) -> String {
    let out = build(engine, context, args);
    let text = text(&out);
    assert!(
        out.status.success(),
        "docker build {args:?} failed:\n{text}\nengine log:\n{}",
        engine.log()
    );
    text
}

fn build_fails(engine: &EngineProcess, context: &Path, args: &[&str]) -> String {
    let out = build(engine, context, args);
    let text = text(&out);
    assert!(
        !out.status.success(),
        "docker build {args:?} succeeded:\n{text}"
    );
    text
}

const APP: &str = "\
# A two-stage build.
ARG BASE=busybox:test
FROM ${BASE} AS build
ARG GREETING=hello
RUN mkdir -p /out \\
 && echo \"$GREETING from the build stage\" > /out/msg \\
 && echo built-in-stage-one
RUN echo \"$GREETING\" > /out/greeting

FROM ${BASE}
ENV APP_NAME=demo
WORKDIR /app
COPY --from=build /out/msg ./msg
COPY . /ctx/
COPY --chown=app:staff hello.txt ./
USER app
LABEL org.example.team=infra
CMD [\"sh\", \"-c\", \"cat /app/msg /app/hello.txt; echo $APP_NAME; id -u; stat -c %u:%g /app/hello.txt; ls /ctx\"]
";

#[test]
fn a_multi_stage_build_runs_and_a_rebuild_is_all_cache() {
    let engine = engine_with_busybox();
    let ctx = engine.path("ctx");
    write(&ctx, "Dockerfile", APP);
    write(&ctx, "hello.txt", "hi from the context\n");
    write(&ctx, "secret.txt", "do not ship\n");
    write(&ctx, "sub/keep.txt", "kept\n");
    write(&ctx, ".dockerignore", "secret.txt\n");

    let started = Instant::now();
    let out = build_ok(&engine, &ctx, &["-t", "app:1"]);
    let first = started.elapsed();
    assert!(out.contains("Step 1/13 : FROM ${BASE} AS build"), "{out}");
    assert!(out.contains("built-in-stage-one"), "{out}");
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(out.contains("Successfully tagged app:1"), "{out}");

    let run = engine.docker_ok(&["run", "--rm", "app:1"]);
    assert_eq!(
        run,
        "hello from the build stage\nhi from the context\ndemo\n1000\n1000:50\n\
         Dockerfile\nhello.txt\nsub\n",
        "the .dockerignore'd file must not be there"
    );
    let inspect = engine.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{.Config.WorkingDir}} {{index .Config.Labels \"org.example.team\"}} {{.Config.Env}}",
        "app:1",
    ]);
    assert!(inspect.starts_with("app /app infra ["), "{inspect}");
    assert!(inspect.contains("APP_NAME=demo"), "{inspect}");
    // Build args never reach the image.
    assert!(!inspect.contains("GREETING"), "{inspect}");
    let history = engine.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "app:1",
    ]);
    assert!(history.contains("WORKDIR /app"), "{history}");
    assert!(history.contains("COPY"), "{history}");
    assert_eq!(
        engine.docker_ok(&["ps", "-aq"]),
        "",
        "RUN containers are removed"
    );

    // Nothing changed: every step from the cache, no new image or layer.
    let images = engine.docker_ok(&["images", "-q", "--no-trunc"]);
    let layers = engine.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{.RootFS.Layers}}",
        "app:1",
    ]);
    let started = Instant::now();
    let out = build_ok(&engine, &ctx, &["-t", "app:1"]);
    let again = started.elapsed();
    assert_eq!(out.matches(" ---> Using cache").count(), 11, "{out}");
    assert!(!out.contains("Running in"), "{out}");
    assert_eq!(engine.docker_ok(&["images", "-q", "--no-trunc"]), images);
    assert_eq!(
        engine.docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{.RootFS.Layers}}",
            "app:1"
        ]),
        layers
    );
    assert!(
        again * 2 < first,
        "a cached rebuild ({again:?}) should take a fraction of the first build ({first:?})"
    );

    // A changed file invalidates its COPY and what follows, not before.
    write(&ctx, "hello.txt", "changed\n");
    let out = build_ok(&engine, &ctx, &["-t", "app:2"]);
    assert_eq!(out.matches(" ---> Using cache").count(), 6, "{out}");
    let run = engine.docker_ok(&["run", "--rm", "app:2"]);
    assert!(run.contains("changed"), "{run}");

    // --build-arg reaches the stage that declares it.
    let out = build_ok(
        &engine,
        &ctx,
        &["--build-arg", "GREETING=bonjour", "-t", "app:3"],
    );
    assert!(out.contains("Running in"), "{out}");
    let run = engine.docker_ok(&["run", "--rm", "app:3"]);
    assert!(run.starts_with("bonjour from the build stage\n"), "{run}");

    // --no-cache runs everything again and makes a new image.
    let out = build_ok(&engine, &ctx, &["--no-cache", "-t", "app:4"]);
    assert!(!out.contains("Using cache"), "{out}");
    assert_eq!(out.matches("Running in").count(), 2, "{out}");
    let id = |name: &str| engine.docker_ok(&["image", "inspect", "-f", "{{.Id}}", name]);
    assert_ne!(id("app:4"), id("app:2"));

    // `docker build -q` prints the id alone; the cache then goes with
    // `docker builder prune`, and the images stay runnable.
    let out = build(&engine, &ctx, &["-q", "-t", "app:4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        id("app:4").trim()
    );
    let pruned = engine.docker_ok(&["builder", "prune", "-f"]);
    assert!(pruned.contains("Total"), "{pruned}");
    let out = build_ok(&engine, &ctx, &["-t", "app:5"]);
    assert!(!out.contains("Using cache"), "{out}");
    assert!(
        engine
            .docker_ok(&["run", "--rm", "app:4"])
            .contains("changed")
    );
}

/// What a failed build must leave: no image, no container, no working
/// directory, no mount.
fn nothing_left(engine: &EngineProcess, images: &str) {
    assert_eq!(engine.docker_ok(&["images", "-q"]), images);
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
    let builds = engine.dir.path().join("state/engine/builds");
    let left = std::fs::read_dir(&builds).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "{} is not empty", builds.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = engine.dir.path().to_str().unwrap();
    assert!(!mounts.contains(state), "a mount under {state} is left");
}

#[test]
fn bad_dockerfiles_fail_on_their_line_and_leave_nothing() {
    let engine = engine_with_busybox();
    let ctx = engine.path("ctx");
    write(&ctx, "file.txt", "x\n");
    let images = engine.docker_ok(&["images", "-q"]);
    let cases = [
        (
            "FROM busybox:test\nRUN true\nFETCH http://x\n",
            "Dockerfile parse error line 3: unknown instruction 'FETCH'",
        ),
        (
            "FROM busybox:test\n# a comment\nCOPY ../../etc/passwd /x\n",
            "Dockerfile line 3 (COPY ../../etc/passwd /x): forbidden path outside the build context",
        ),
        (
            "FROM busybox:test\nCOPY missing.txt /x\n",
            "Dockerfile line 2 (COPY missing.txt /x): COPY failed: file not found in build context",
        ),
        (
            "FROM 127.0.0.1:1/nothing/here:1\nRUN true\n",
            "Dockerfile line 1 (FROM 127.0.0.1:1/nothing/here:1): pulling 127.0.0.1:1/nothing/here:1",
        ),
        (
            "FROM busybox:test\nRUN echo first > /first\nRUN echo on-stderr >&2; exit 3\nRUN true\n",
            "Dockerfile line 3 (RUN echo on-stderr >&2; exit 3): The command '/bin/sh -c echo on-stderr >&2; exit 3' returned a non-zero code: 3",
        ),
    ];
    for (dockerfile, message) in cases {
        write(&ctx, "Dockerfile", dockerfile);
        let out = build_fails(&engine, &ctx, &["-t", "bad:1"]);
        assert!(
            out.contains(message),
            "{dockerfile}: wanted {message:?} in:\n{out}"
        );
        nothing_left(&engine, &images);
    }
    let out = build_fails(&engine, &ctx, &["-t", "bad:1"]);
    assert!(
        out.contains("on-stderr"),
        "a failing RUN's output is shown: {out}"
    );

    // What the engine refuses before reading the context.
    write(&ctx, "Dockerfile", "FROM busybox:test\n");
    let out = build_fails(&engine, &ctx, &["--network", "host", "-t", "bad:1"]);
    assert!(
        out.contains("networkmode=host is not allowed by this engine"),
        "{out}"
    );
    let out = build_fails(&engine, &ctx, &["--platform", "linux/s390x", "-t", "bad:1"]);
    assert!(out.contains("not supported"), "{out}");
    let out = build_fails(&engine, &ctx, &["--target", "nowhere", "-t", "bad:1"]);
    assert!(
        out.contains("failed to reach build target nowhere"),
        "{out}"
    );
    // A remote context (the CLI fetches URLs itself; other clients may not).
    let answer = post(&engine, "/v1.41/build?remote=https://example.com/ctx.tar");
    assert!(answer.contains("remote build contexts"), "{answer}");
    nothing_left(&engine, &images);

    // BuildKit's entry points say what to do instead.
    for path in ["/v1.41/session", "/v1.41/grpc", "/v1.41/build?version=2"] {
        let answer = post(&engine, path);
        assert!(answer.contains("DOCKER_BUILDKIT=0"), "{path}: {answer}");
    }
}

/// `POST path` on the engine's socket: the answer's body.
fn post(engine: &EngineProcess, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "--unix-socket"])
        .arg(&engine.socket)
        .arg(format!("http://moat{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_steps_have_no_network_and_run_as_the_remapped_uid() {
    let engine = engine_with_busybox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctx = engine.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM busybox:test\n\
             RUN if nc -w 2 127.0.0.1 {port} </dev/null; then echo REACHED-THE-HOST; exit 1; fi; \
                 echo links: $(ip -o link | cut -d: -f2); \
                 echo uid_map: $(cat /proc/self/uid_map); \
                 echo caps: $(grep CapEff /proc/self/status); \
                 echo x > /made-by-run\n\
             RUN stat -c owner=%u:%g /made-by-run\n"
        ),
    );
    let out = build_ok(&engine, &ctx, &["-t", "iso:1"]);
    assert!(!out.contains("\nREACHED-THE-HOST"), "{out}");
    assert!(out.contains("Network is unreachable"), "{out}");
    assert!(out.contains("links: lo\n"), "only loopback: {out}");
    // The engine runs containers as a subordinate range: root inside is
    // that range's first uid on the host, never 0.
    let log = engine.log();
    let first_uid: u32 = log
        .split("containers run as host uid ")
        .nth(1)
        .and_then(|rest| rest.split('+').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no uid range in the engine log: {log}"));
    assert_ne!(first_uid, 0);
    assert!(
        out.contains(&format!("uid_map: 0 {first_uid} 65536")),
        "{out}"
    );
    assert!(
        out.contains("caps: CapEff: 00000000a80425fb"),
        "Docker's capabilities: {out}"
    );
    assert!(out.contains("owner=0:0"), "{out}");
    let mut buf = [0u8; 1];
    match listener.accept() {
        Ok((mut conn, _)) => panic!(
            "a RUN step connected to the host: {:?}",
            conn.read(&mut buf)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    assert_eq!(engine.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn an_image_built_from_a_pulled_base_is_pushed_and_pulled_again() {
    let registry = RegistryProcess::anonymous();
    let engine = engine_with_busybox();
    let base = format!("{}/base/busybox:1", registry.host());
    engine.docker_ok(&["tag", "busybox:test", &base]);
    engine.docker_ok(&["push", &base]);
    engine.docker_ok(&["rmi", &base, "busybox:test"]);

    let ctx = engine.path("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base} AS build\nRUN echo built > /artifact\n\
             FROM {base}\nCOPY --from=build /artifact /artifact\nCMD [\"cat\", \"/artifact\"]\n"
        ),
    );
    let app = format!("{}/team/app:1", registry.host());
    let out = build_ok(&engine, &ctx, &["-t", &app]);
    assert!(out.contains("Pull complete"), "FROM pulled the base: {out}");
    let out = engine.docker_ok(&["push", &app]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    engine.docker_ok(&["rmi", &app]);
    engine.docker_ok(&["pull", &app]);
    assert_eq!(engine.docker_ok(&["run", "--rm", &app]), "built\n");
    // A build with --pull fetches the base again even though it is here.
    let out = build_ok(&engine, &ctx, &["--pull", "-t", &app]);
    assert!(
        out.contains("Image is up to date") || out.contains("Already exists"),
        "{out}"
    );
    assert!(out.contains("Using cache"), "{out}");
}

#[test]
fn a_build_through_the_gateway_as_its_policy_allows() {
    let gw = GatewayProcess::start();
    let operator = gw.issue("olivia", &["operator"]);
    let developer = gw.issue("dave", &["developer"]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox:test\nCOPY note.txt /note.txt\nRUN wc -c < /note.txt > /size\nCMD cat /note.txt /size\n",
    );
    write(ctx.path(), "note.txt", "through the gateway\n");
    let build = |certs: &Path, args: &[&str]| {
        gw.docker_cmd(certs)
            .env("DOCKER_BUILDKIT", "0")
            .arg("build")
            .args(args)
            .arg(ctx.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = build(&operator, &["-t", "team/app:1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Successfully tagged team/app:1"),
        "{}",
        text(&out)
    );
    assert_eq!(
        gw.docker_ok(&operator, &["run", "--rm", "team/app:1"]),
        "through the gateway\n20\n"
    );
    // A developer may not build; an operator may not give RUN the host's
    // network (host.network), whatever the engine allows.
    let out = build(&developer, &["-t", "team/app:2"]);
    assert!(
        !out.status.success() && text(&out).contains("dave may not"),
        "{}",
        text(&out)
    );
    let out = build(&operator, &["--network", "host", "-t", "team/app:3"]);
    assert!(
        !out.status.success() && text(&out).contains("olivia may not"),
        "{}",
        text(&out)
    );
}
