//! The attribution reference checks: runs `scripts/attribution_ref.py` (numpy solves,
//! brute-force Shapley and ChannelAttribution 2.2.5) against the built binary. Needs the
//! project's `.venv`, which `scripts/test` creates; without it the test is skipped with a
//! message, except under `CI=true`, where a missing venv is a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn attribution_models_match_the_python_references() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        let msg = "attribution_ref: .venv is missing (scripts/test creates it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true, so this is a failure");
        }
        eprintln!("{msg}; skipping the Python reference checks");
        return;
    }
    let out = Command::new(&python)
        .current_dir(root)
        .arg("scripts/attribution_ref.py")
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_clicktrail"))
        .output()
        .expect("run .venv/bin/python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "scripts/attribution_ref.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
