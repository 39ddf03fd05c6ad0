//! `clicktrail journal verify|inspect`: read-only looks at a journal on disk.

use clicktrail_storage::{scan, Kind, PartitionReport};
use std::fmt::Write;
use std::path::Path;

fn kind_name(k: u16) -> String {
    Kind::from_u16(k).map_or_else(|| format!("kind-{k}"), |k| k.name().to_string())
}

/// Renders the inspect listing.
pub fn render_inspect(reports: &[PartitionReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no partitions\n");
    }
    for p in reports {
        let _ = writeln!(
            out,
            "partition {:>5} {:<20} segments {:>4}  records {:>10}  end offset {:>12}{}",
            p.id,
            p.name,
            p.segments.len(),
            p.records(),
            p.end(),
            if p.is_clean() { "" } else { "  CORRUPT" }
        );
        for s in &p.segments {
            let kinds: Vec<String> = s
                .kinds
                .iter()
                .map(|(k, n)| format!("{}={n}", kind_name(*k)))
                .collect();
            let _ = writeln!(
                out,
                "    segment base {:>12}  records {:>10}  end {:>12}  {}",
                s.base,
                s.records,
                s.end,
                kinds.join(" ")
            );
        }
    }
    out
}

/// Renders the verify report; returns it and whether everything is clean.
pub fn render_verify(reports: &[PartitionReport]) -> (String, bool) {
    let mut out = String::new();
    let mut clean = true;
    let (mut records, mut segments) = (0u64, 0usize);
    for p in reports {
        records += p.records();
        segments += p.segments.len();
        for s in &p.segments {
            if let Some((at, why)) = &s.problem {
                clean = false;
                let _ = writeln!(
                    out,
                    "CORRUPT {} {}: at offset {at}: {why}",
                    p.name,
                    s.path.display()
                );
            }
        }
        for (path, why) in &p.bad_segments {
            clean = false;
            let _ = writeln!(out, "CORRUPT {} {}: {why}", p.name, path.display());
        }
    }
    let _ = writeln!(
        out,
        "{}: {} partitions, {segments} segments, {records} records checked",
        if clean { "OK" } else { "FAILED" },
        reports.len()
    );
    (out, clean)
}

/// Runs verify or inspect; returns the process exit code.
pub fn run(action: crate::cli::JournalAction, data_dir: &Path) -> i32 {
    if !data_dir.join("journal").is_dir() {
        eprintln!("no journal in {}", data_dir.display());
        return 2;
    }
    let reports = match scan(data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read the journal: {e}");
            return 2;
        }
    };
    match action {
        crate::cli::JournalAction::Inspect => {
            print!("{}", render_inspect(&reports));
            0
        }
        crate::cli::JournalAction::Verify => {
            let (text, clean) = render_verify(&reports);
            print!("{text}");
            if clean {
                0
            } else {
                1
            }
        }
    }
}
