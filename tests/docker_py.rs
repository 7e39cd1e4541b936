//! docker-py (`pip install docker`) as a second real client of the engine.

mod common;

use common::engine::EngineProcess;

#[test]
fn docker_py_creates_starts_waits_reads_logs_and_removes() {
    let engine = EngineProcess::start();
    engine.import_busybox();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/docker_py_engine.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("MOAT_ENGINE_SOCKET", &engine.socket)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}\nengine log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        engine.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-py: ok"));
}
