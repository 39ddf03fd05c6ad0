//! The README's walkthrough, run as written: every ```` ```sh walkthrough ```` block, in
//! order, in one bash session against a fresh demo server, each command's output checked
//! against the `# ` answer lines under it. So the walkthrough cannot go stale.
//!
//! Matching: each answer line must match its own line of the command's output (other output
//! lines may be there too, and the order is free: HTTP header order is not fixed); `...` in
//! an answer line stands for any text. The only
//! rewrites: the demo address becomes the test server's, and `cargo run -q --release
//! [-p clicktrail-load] --` becomes the binaries this build made.

mod common;

use common::Server;
use std::path::{Path, PathBuf};

/// One command of the walkthrough and the answer lines shown under it.
#[derive(Debug)]
struct Step {
    command: String,
    expect: Vec<String>,
}

fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut continued = false;
    for line in readme.lines() {
        if !in_block {
            in_block = line.trim_end() == "```sh walkthrough";
            continue;
        }
        if line.starts_with("```") {
            in_block = false;
            continue;
        }
        if continued {
            let last = steps.last_mut().expect("a continued command");
            last.command.push('\n');
            last.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(answer) = line.strip_prefix("# ") {
            steps
                .last_mut()
                .expect("an answer follows a command")
                .expect
                .push(answer.to_string());
        } else if !line.trim().is_empty() {
            steps.push(Step {
                command: line.to_string(),
                expect: Vec::new(),
            });
            continued = line.ends_with('\\');
        }
    }
    steps
}

/// Whether `line` matches `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn loadtest_binary() -> PathBuf {
    let dir = Path::new(common::BIN).parent().unwrap();
    let bin = dir.join("clicktrail-load");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p clicktrail-load, or cargo test --workspace)",
        bin.display()
    );
    bin
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 15, "walkthrough blocks found: {steps:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.wait_until("ready", |s| {
        common::get(s.addr, "/readyz").is_ok_and(|r| r.0 == 200)
    });
    let load = loadtest_binary();
    let mut script = String::from("set -u\n");
    for (i, s) in steps.iter().enumerate() {
        let command = s
            .command
            .replace("http://127.0.0.1:8080", &format!("http://{}", server.addr))
            .replace(
                "cargo run -q --release -p clicktrail-load --",
                load.to_str().unwrap(),
            )
            .replace("cargo run -q --release --", common::BIN);
        script.push_str(&format!("echo '@@step {i}'\n{command}\n"));
    }
    script.push_str("echo '@@step end'\n");
    let out = std::process::Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        stdout.contains("@@step end"),
        "the walkthrough did not finish: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut outputs: Vec<Vec<&str>> = vec![Vec::new(); steps.len()];
    let mut at = None;
    for line in stdout.lines() {
        if let Some(n) = line.strip_prefix("@@step ") {
            at = n.parse::<usize>().ok();
        } else if let Some(i) = at {
            outputs[i].push(line);
        }
    }
    for (i, s) in steps.iter().enumerate() {
        let mut used = vec![false; outputs[i].len()];
        for want in &s.expect {
            let found = (0..outputs[i].len()).find(|&j| !used[j] && matches(want, outputs[i][j]));
            if let Some(j) = found {
                used[j] = true;
            }
            assert!(
                found.is_some(),
                "step {i}: `{}`\nexpected a line like\n  {want}\nin its output\n  {}\n(stderr: {})",
                s.command,
                outputs[i].join("\n  "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn answer_patterns_match_as_documented() {
    assert!(matches("a...c", "abbbc"));
    assert!(matches("{\"x\":...}", "{\"x\":1}"));
    assert!(matches("a...b...c", "a1b2c"));
    assert!(!matches("a...b...c", "a1c2b"));
    assert!(!matches("abc", "abcd"));
    assert!(matches("...", "anything"));
}
