//! `clicktrail journal verify|inspect|accept-damage`: looks at a journal on disk (read
//! only), and the operator's acceptance of damage recovery kept.

use clicktrail_storage::{accept_damage, scan, Damage, Kind, PartitionReport};
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
            if p.is_clean() {
                ""
            } else if p.is_ready() {
                "  DAMAGE ACCEPTED"
            } else {
                "  CORRUPT"
            }
        );
        for d in &p.damage {
            let _ = writeln!(out, "    {}", damage_line(d));
        }
        for s in &p.segments {
            let kinds: Vec<String> = s
                .kinds
                .iter()
                .map(|(k, n)| format!("{}={n}", kind_name(*k)))
                .collect();
            let _ = writeln!(
                out,
                "    segment base {:>12}  records {:>10}  end {:>12}  {}{}",
                s.base,
                s.records,
                s.end,
                kinds.join(" "),
                s.short.map_or(String::new(), |(file, header)| format!(
                    "  (short: {file} of {header} bytes)"
                ))
            );
        }
    }
    out
}

/// One line for a damaged range.
fn damage_line(d: &Damage) -> String {
    let copy = d
        .copy
        .as_ref()
        .map_or("no copy yet (the next start writes one)".to_string(), |p| {
            format!("copy in {}", p.display())
        });
    format!(
        "{} {} offsets {}..{}: {} ({} bytes, about {} record(s) lost, {} intact records after \
         it kept); {copy}",
        if d.accepted { "ACCEPTED" } else { "DAMAGED" },
        d.partition,
        d.from,
        d.to,
        d.why,
        d.bytes,
        d.frames,
        d.records_after,
    )
}

/// Renders the verify report; returns it and whether the journal is good to serve from:
/// no damage that is not accepted, no unusable segment, no torn tail.
pub fn render_verify(reports: &[PartitionReport]) -> (String, bool) {
    let mut out = String::new();
    let mut clean = true;
    let (mut records, mut segments) = (0u64, 0usize);
    let mut to_accept = Vec::new();
    for p in reports {
        records += p.records();
        segments += p.segments.len();
        for d in &p.damage {
            let _ = writeln!(out, "{}", damage_line(d));
            if !d.accepted && !to_accept.contains(&p.name) {
                to_accept.push(p.name.clone());
            }
        }
        for s in &p.segments {
            if let Some((file, header)) = s.short {
                let _ = writeln!(
                    out,
                    "SHORT {} {}: the file is {file} bytes, its header says {header}; read as \
                     if the rest were zeros, as a start does",
                    p.name,
                    s.path.display()
                );
            }
            if let Some((at, why)) = &s.problem {
                clean = false;
                let _ = writeln!(
                    out,
                    "TORN TAIL {} {}: at offset {at}: {why}; nothing valid follows, the next \
                     start clears it",
                    p.name,
                    s.path.display()
                );
            }
        }
        for (path, why) in &p.bad_segments {
            clean = false;
            let _ = writeln!(out, "UNUSABLE {} {}: {why}", p.name, path.display());
        }
    }
    clean &= to_accept.is_empty();
    let _ = writeln!(
        out,
        "{}: {} partitions, {segments} segments, {records} records checked",
        if clean { "OK" } else { "FAILED" },
        reports.len()
    );
    for name in to_accept {
        let _ = writeln!(
            out,
            "partition {name} has damage a start keeps failing readiness on: keep the copies, \
             then accept it with: clicktrail journal accept-damage --partition {name}"
        );
    }
    (out, clean)
}

/// Runs verify, inspect or accept-damage (of `partition`); returns the exit code.
pub fn run(action: crate::cli::JournalAction, partition: Option<&str>, data_dir: &Path) -> i32 {
    if !data_dir.join("journal").is_dir() {
        eprintln!("no journal in {}", data_dir.display());
        return 2;
    }
    if action == crate::cli::JournalAction::AcceptDamage {
        let name = partition.expect("the parser requires --partition");
        return match accept_damage(data_dir, name) {
            Ok(damage) if damage.is_empty() => {
                println!("partition {name} has no damage; nothing to accept");
                0
            }
            Ok(damage) => {
                for d in &damage {
                    println!("{}", damage_line(d));
                }
                println!(
                    "accepted: partition {name} no longer fails readiness; its damaged records \
                     stay skipped and the copies stay where they are"
                );
                0
            }
            Err(e) => {
                eprintln!("cannot accept damage of partition {name}: {e}");
                2
            }
        };
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
        _ => {
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
