//! Two `dllm serve` replicas behind SGLang's model gateway: tools/gateway_e2e.py (routes through
//! the gateway, requests spread over both, one replica killed under load and started again).
//! It needs the gateway's venv (tools/setup-router.sh makes `.venv-router`, as .ci/run does);
//! without it this test prints why and passes without running.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The script bounds its own run (`--deadline-s`); this is the backstop above it.
const BACKSTOP: Duration = Duration::from_secs(360);

#[test]
fn replicas_behind_sglang_model_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-router/bin/python");
    if !python.exists() {
        // Straight to stderr: libtest's capture would hide an eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "tests/gateway.rs skipped: no {} (run tools/setup-router.sh to test dllm behind SGLang's model gateway)",
            python.display()
        );
        return;
    }
    let mut child = Command::new(&python)
        .arg(root.join("tools/gateway_e2e.py"))
        .args(["--binary", env!("CARGO_BIN_EXE_dllm"), "--deadline-s", "300"])
        .spawn()
        .expect("starting tools/gateway_e2e.py");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for tools/gateway_e2e.py") {
            break s;
        }
        if t0.elapsed() > BACKSTOP {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tools/gateway_e2e.py still running after {BACKSTOP:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "tools/gateway_e2e.py failed ({status}); its output is above");
}
