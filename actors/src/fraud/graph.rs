//! The link graph: affiliates joined by the infrastructure they share. Nodes are affiliates
//! and identifiers (an IP /24 or /48, a device fingerprint, a payout account, a buyer's
//! e-mail hash, an own address); an identifier used by two or more affiliates joins them.
//! Connected affiliates (union-find) form a cluster, shown with its evidence.
//!
//! Only flagged traffic feeds the network and device identifiers: every affiliate's honest
//! visitors share the big ISPs' ranges, and linking on them would join everyone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What an identifier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    Subnet,
    Fingerprint,
    PayoutAccount,
    EmailHash,
}

impl IdKind {
    pub fn name(self) -> &'static str {
        match self {
            IdKind::Subnet => "subnet",
            IdKind::Fingerprint => "fingerprint",
            IdKind::PayoutAccount => "payout-account",
            IdKind::EmailHash => "buyer-email-hash",
        }
    }
}

/// One shared identifier, with how often each affiliate used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub kind: IdKind,
    pub value: String,
    pub uses: BTreeMap<String, u64>,
}

/// Affiliates that share infrastructure, and what they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub affiliates: Vec<String>,
    pub evidence: Vec<Shared>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct LinkGraph {
    ids: HashMap<(IdKind, Box<str>), HashMap<Arc<str>, u64>>,
    ids_max: usize,
    /// Identifiers not kept because the graph was full.
    pub dropped: u64,
}

impl LinkGraph {
    pub fn new(ids_max: usize) -> LinkGraph {
        LinkGraph {
            ids_max,
            ..LinkGraph::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Records that `affiliate` used identifier `value`.
    pub fn link(&mut self, kind: IdKind, value: &str, affiliate: &Arc<str>) {
        if value.is_empty() || affiliate.is_empty() {
            return;
        }
        let k = (kind, Box::from(value));
        if !self.ids.contains_key(&k) && self.ids.len() >= self.ids_max {
            self.dropped += 1;
            return;
        }
        *self
            .ids
            .entry(k)
            .or_default()
            .entry(affiliate.clone())
            .or_default() += 1;
    }

    /// The clusters, given the identifiers known besides the traffic (payout accounts):
    /// largest first, each with its shared identifiers.
    pub fn clusters(&self, extra: &[(IdKind, String, String)]) -> Vec<Cluster> {
        let mut shared: Vec<Shared> = self
            .ids
            .iter()
            .filter(|(_, uses)| uses.len() >= 2)
            .map(|((kind, value), uses)| Shared {
                kind: *kind,
                value: value.to_string(),
                uses: uses.iter().map(|(a, n)| (a.to_string(), *n)).collect(),
            })
            .collect();
        let mut by_value: BTreeMap<(IdKind, &str), BTreeMap<String, u64>> = BTreeMap::new();
        for (kind, value, affiliate) in extra {
            *by_value
                .entry((*kind, value.as_str()))
                .or_default()
                .entry(affiliate.clone())
                .or_default() += 1;
        }
        shared.extend(by_value.into_iter().filter(|(_, u)| u.len() >= 2).map(
            |((kind, value), uses)| Shared {
                kind,
                value: value.to_string(),
                uses,
            },
        ));
        group(shared)
    }
}

/// Union-find over the affiliates of the shared identifiers.
fn group(shared: Vec<Shared>) -> Vec<Cluster> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for s in &shared {
        for a in s.uses.keys() {
            let n = index.len();
            index.entry(a.clone()).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..index.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for s in &shared {
        let mut ids = s.uses.keys().map(|a| index[a]);
        let first = ids.next().expect("a shared identifier has two users");
        for other in ids {
            let (a, b) = (find(&mut parent, first), find(&mut parent, other));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut clusters: BTreeMap<usize, Cluster> = BTreeMap::new();
    for (name, i) in &index {
        let root = find(&mut parent, *i);
        clusters
            .entry(root)
            .or_insert_with(|| Cluster {
                affiliates: Vec::new(),
                evidence: Vec::new(),
            })
            .affiliates
            .push(name.clone());
    }
    for s in shared {
        let first = s.uses.keys().next().expect("two users");
        let root = find(&mut parent, index[first]);
        clusters
            .get_mut(&root)
            .expect("every root has a cluster")
            .evidence
            .push(s);
    }
    let mut out: Vec<Cluster> = clusters.into_values().collect();
    for c in &mut out {
        c.evidence
            .sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
    }
    out.sort_by(|a, b| {
        b.affiliates
            .len()
            .cmp(&a.affiliates.len())
            .then(a.affiliates.cmp(&b.affiliates))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_identifiers_join_affiliates_transitively() {
        let mut g = LinkGraph::new(100);
        let (a, b, c, d) = (
            Arc::from("a"),
            Arc::from("b"),
            Arc::from("c"),
            Arc::from("d"),
        );
        g.link(IdKind::Subnet, "203.0.113.0/24", &a);
        g.link(IdKind::Subnet, "203.0.113.0/24", &a);
        g.link(IdKind::Subnet, "203.0.113.0/24", &b);
        g.link(IdKind::Fingerprint, "f1", &b);
        g.link(IdKind::Fingerprint, "f1", &c);
        g.link(IdKind::Fingerprint, "f2", &d); // alone: no cluster
        let extra = [
            (IdKind::PayoutAccount, "p@x".to_string(), "d".to_string()),
            (IdKind::PayoutAccount, "q@x".to_string(), "e".to_string()),
        ];
        let cl = g.clusters(&extra);
        assert_eq!(cl.len(), 1);
        assert_eq!(cl[0].affiliates, ["a", "b", "c"]);
        assert_eq!(cl[0].evidence.len(), 2);
        assert_eq!(cl[0].evidence[0].uses["a"], 2);
        let extra = [
            (IdKind::PayoutAccount, "p@x".to_string(), "d".to_string()),
            (IdKind::PayoutAccount, "p@x".to_string(), "e".to_string()),
        ];
        let cl = g.clusters(&extra);
        assert_eq!(cl.len(), 2);
        assert_eq!(cl[1].affiliates, ["d", "e"]);
    }

    #[test]
    fn the_graph_is_bounded() {
        let mut g = LinkGraph::new(2);
        let a = Arc::from("a");
        for v in ["1", "2", "3"] {
            g.link(IdKind::Subnet, v, &a);
        }
        assert_eq!((g.len(), g.dropped), (2, 1));
    }
}
