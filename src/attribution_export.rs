//! `clicktrail attribution export`: the journeys of a stopped node's journal in
//! ChannelAttribution's grouped format, built exactly as the server builds its training
//! set (the attribution actor's own logic, fed the ingest records in time order after the
//! attributions already written), so `clicktrail attribution fit` on the file gives the
//! numbers the server's fit gives on the same journal.
//!
//! It holds every ingest record's touch in memory while sorting (about 150 bytes per
//! click): meant for an analyst's machine, not for a running node.

use crate::config::Config;
use anyhow::Context;
use clicktrail_actors::attribution::processor::{input_of, AttributionProcessor};
use clicktrail_actors::attribution::SharedAttribution;
use clicktrail_actors::catalog::EntityStore;
use clicktrail_actors::system::{ingest_shard, ATTRIBUTIONS};
use clicktrail_storage::Journal;
use std::sync::Arc;

/// The grouped journeys of `campaign` (all campaigns when `None`) that ended in
/// [from, to], as CSV.
pub fn export(
    config: &Config,
    campaign: Option<&str>,
    from_us: Option<i64>,
    to_us: Option<i64>,
) -> anyhow::Result<String> {
    let data_dir = &config.journal.data_dir;
    anyhow::ensure!(
        data_dir.is_dir(),
        "no data directory at {}",
        data_dir.display()
    );
    let journal = Journal::open(data_dir, config.journal_config())
        .with_context(|| format!("cannot open the journal in {}", data_dir.display()))?;
    let store = Arc::new(EntityStore::open(&journal).context("cannot read the entities")?);
    if let Some(c) = campaign {
        anyhow::ensure!(
            store.snapshot().campaigns.contains_key(c),
            "no campaign {c:?} in this journal"
        );
    }
    let mut ac = config.attribution.to_config();
    if from_us.is_some() || to_us.is_some() {
        ac.training_window_us = Some((from_us.unwrap_or(i64::MIN), to_us.unwrap_or(i64::MAX)));
    }
    let mut p =
        AttributionProcessor::new(Vec::new(), store, ac, SharedAttribution::default()).offline();
    use clicktrail_actors::Processor;
    if let Some(part) = journal.get(ATTRIBUTIONS) {
        let mut r = part.reader()?;
        while let Some(rec) = r.next()? {
            p.restore(&rec);
        }
    }
    let mut inputs = Vec::new();
    let mut names: Vec<String> = journal
        .partitions()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| ingest_shard(n).is_some())
        .collect();
    names.sort_by_key(|n| ingest_shard(n));
    for name in names {
        let part = journal.get(&name).expect("listed");
        let mut r = part.reader()?;
        while let Some(rec) = r.next()? {
            if let Some(i) = input_of(&rec) {
                inputs.push(i);
            }
        }
    }
    inputs.sort_by_key(|i| i.at_us()); // stable: a partition's own order among equals
    let mut out = Vec::new();
    for i in inputs {
        p.handle(i, &mut out);
        out.clear();
    }
    journal.close()?;
    Ok(p.training_grouped(campaign).to_csv())
}
