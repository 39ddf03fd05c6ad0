//! Markov-chain attribution with removal effects, solved exactly (see the module docs).

use super::Grouped;
use std::collections::HashMap;

/// Strongly connected components up to this many states are solved by dense LU; larger
/// ones by Gauss–Seidel.
pub const DENSE_MAX: usize = 200;

/// Gauss–Seidel stops when its estimated remaining error is below this.
const TOLERANCE: f64 = 1e-14;
const MAX_SWEEPS: usize = 1_000_000;

/// A fitted Markov model.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkovFit {
    pub order: usize,
    /// Probability of reaching `(conversion)` from `(start)`.
    pub p_conversion: f64,
    /// `1 − P₋c / P`, per channel index.
    pub removal_effects: Vec<f64>,
    /// Credit per channel index.
    pub conversions: Vec<f64>,
    pub value: Vec<f64>,
}

/// The chain: transient states 0 (start), 1.. (windows), sparse rows.
#[derive(Debug)]
struct Chain {
    /// Row `i`'s transitions are `cols/probs[row_start[i]..row_start[i + 1]]`.
    row_start: Vec<usize>,
    cols: Vec<u32>,
    probs: Vec<f64>,
    /// Probability of going straight to `(conversion)`.
    b: Vec<f64>,
    /// The channels each state's window holds (empty for start).
    members: Vec<Vec<u32>>,
    /// Strongly connected components in reverse topological order (successors first).
    sccs: Vec<Vec<u32>>,
}

/// Fits an order-`order` (1..=4) Markov chain on grouped journeys.
pub fn fit_markov(g: &Grouped, order: usize) -> Result<MarkovFit, String> {
    fit_markov_with(g, order, DENSE_MAX)
}

/// [`fit_markov`] with components above `dense_max` states solved by Gauss–Seidel.
pub(super) fn fit_markov_with(
    g: &Grouped,
    order: usize,
    dense_max: usize,
) -> Result<MarkovFit, String> {
    if !(1..=4).contains(&order) {
        return Err(format!("markov order {order}: use 1, 2, 3 or 4"));
    }
    let chain = build(g, order);
    let n_ch = g.channels.len();
    let mut removed = vec![false; chain.b.len()];
    let p = chain.solve(&removed, dense_max)?;
    let mut removal_effects = vec![0.0; n_ch];
    if p > 0.0 {
        // Which states hold each channel.
        let mut holding: Vec<Vec<u32>> = vec![Vec::new(); n_ch];
        for (s, m) in chain.members.iter().enumerate() {
            let mut m = m.clone();
            m.sort_unstable();
            m.dedup();
            for c in m {
                holding[c as usize].push(s as u32);
            }
        }
        for (c, states) in holding.iter().enumerate() {
            if states.is_empty() {
                continue;
            }
            states.iter().for_each(|&s| removed[s as usize] = true);
            let p_c = chain.solve(&removed, dense_max)?;
            states.iter().for_each(|&s| removed[s as usize] = false);
            removal_effects[c] = (1.0 - p_c / p).max(0.0);
        }
    }
    let (total_conv, _, total_value) = g.totals();
    let sum_re: f64 = removal_effects.iter().sum();
    let split = |total: f64| -> Vec<f64> {
        removal_effects
            .iter()
            .map(|re| {
                if sum_re > 0.0 {
                    total * re / sum_re
                } else {
                    0.0
                }
            })
            .collect()
    };
    Ok(MarkovFit {
        order,
        p_conversion: p,
        conversions: split(total_conv),
        value: split(total_value),
        removal_effects,
    })
}

/// Packs a window of up to 4 channels (each stored +1, so 0 means "no channel").
fn key(window: &[u32]) -> u128 {
    window
        .iter()
        .fold(0u128, |k, &c| (k << 32) | (u128::from(c) + 1))
}

fn build(g: &Grouped, order: usize) -> Chain {
    let mut ids: HashMap<u128, u32, foldhash::fast::FixedState> = HashMap::default();
    let mut members: Vec<Vec<u32>> = vec![Vec::new()];
    let mut edges: HashMap<u64, f64, foldhash::fast::FixedState> = HashMap::default();
    let mut conv = vec![0.0];
    let mut null = vec![0.0];
    let mut intern = |w: &[u32], members: &mut Vec<Vec<u32>>| -> u32 {
        *ids.entry(key(w)).or_insert_with(|| {
            members.push(w.to_vec());
            (members.len() - 1) as u32
        })
    };
    for p in &g.paths {
        let w = p.conversions + p.nulls;
        if w <= 0.0 || p.touches.is_empty() {
            continue;
        }
        let t = &p.touches;
        let mut prev = 0u32;
        let windows = if t.len() <= order {
            1
        } else {
            t.len() - order + 1
        };
        for i in 0..windows {
            let win = &t[i..(i + order).min(t.len())];
            let s = intern(win, &mut members);
            if s as usize >= conv.len() {
                conv.push(0.0);
                null.push(0.0);
            }
            if s != prev {
                *edges
                    .entry((u64::from(prev) << 32) | u64::from(s))
                    .or_default() += w;
                prev = s;
            }
        }
        conv[prev as usize] += p.conversions;
        null[prev as usize] += p.nulls;
    }
    let n = members.len();
    let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
    for (k, w) in edges {
        rows[(k >> 32) as usize].push((k as u32, w));
    }
    let mut row_start = Vec::with_capacity(n + 1);
    let (mut cols, mut probs, mut b) = (Vec::new(), Vec::new(), Vec::with_capacity(n));
    for (i, row) in rows.iter_mut().enumerate() {
        row.sort_unstable_by_key(|e| e.0);
        let total = row.iter().map(|e| e.1).sum::<f64>() + conv[i] + null[i];
        row_start.push(cols.len());
        for &(c, w) in row.iter() {
            cols.push(c);
            probs.push(w / total);
        }
        b.push(if total > 0.0 { conv[i] / total } else { 0.0 });
    }
    row_start.push(cols.len());
    let sccs = tarjan(n, &row_start, &cols);
    Chain {
        row_start,
        cols,
        probs,
        b,
        members,
        sccs,
    }
}

/// Tarjan's strongly connected components, iteratively; emitted sinks first.
fn tarjan(n: usize, row_start: &[usize], cols: &[u32]) -> Vec<Vec<u32>> {
    const NONE: u32 = u32::MAX;
    let mut index = vec![NONE; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0u32;
    // (node, next edge position)
    let mut call: Vec<(u32, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        call.push((root as u32, row_start[root]));
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root as u32);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = call.last_mut() {
            let v = v as usize;
            if *e < row_start[v + 1] {
                let w = cols[*e] as usize;
                *e += 1;
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w as u32);
                    on_stack[w] = true;
                    call.push((w as u32, row_start[w]));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(u, _)) = call.last() {
                    low[u as usize] = low[u as usize].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    loop {
                        let w = stack.pop().expect("tarjan stack");
                        on_stack[w as usize] = false;
                        comp.push(w);
                        if w as usize == v {
                            break;
                        }
                    }
                    comp.sort_unstable();
                    out.push(comp);
                }
            }
        }
    }
    out
}

impl Chain {
    /// P(conversion) from start, with the `removed` states sending everything to null.
    fn solve(&self, removed: &[bool], dense_max: usize) -> Result<f64, String> {
        let n = self.b.len();
        let mut x = vec![0.0f64; n];
        let mut local: HashMap<u32, usize> = HashMap::new();
        for comp in &self.sccs {
            let live: Vec<u32> = comp
                .iter()
                .copied()
                .filter(|&s| !removed[s as usize])
                .collect();
            if live.is_empty() {
                continue;
            }
            // What flows out of the component (already solved) plus straight conversions.
            let rhs = |s: u32, x: &[f64], inside: &dyn Fn(u32) -> bool| -> f64 {
                let s = s as usize;
                let mut r = self.b[s];
                for e in self.row_start[s]..self.row_start[s + 1] {
                    let c = self.cols[e];
                    if !inside(c) {
                        r += self.probs[e] * x[c as usize];
                    }
                }
                r
            };
            if live.len() == 1 && comp.len() == 1 {
                // No self loops: a singleton depends on solved states only.
                x[live[0] as usize] = rhs(live[0], &x, &|_| false);
            } else if live.len() <= dense_max {
                local.clear();
                local.extend(live.iter().enumerate().map(|(i, &s)| (s, i)));
                let m = live.len();
                let mut a = vec![0.0f64; m * m];
                let mut r = vec![0.0f64; m];
                for (i, &s) in live.iter().enumerate() {
                    a[i * m + i] = 1.0;
                    let su = s as usize;
                    r[i] = self.b[su];
                    for e in self.row_start[su]..self.row_start[su + 1] {
                        let c = self.cols[e];
                        match local.get(&c) {
                            Some(&j) => a[i * m + j] -= self.probs[e],
                            None => r[i] += self.probs[e] * x[c as usize],
                        }
                    }
                }
                let sol = lu_solve(&mut a, &mut r, m)?;
                for (i, &s) in live.iter().enumerate() {
                    x[s as usize] = sol[i];
                }
            } else {
                self.gauss_seidel(&live, &mut x)?;
            }
        }
        Ok(x[0])
    }

    /// Gauss–Seidel over one component's live states (removed states stay 0 in `x`).
    fn gauss_seidel(&self, live: &[u32], x: &mut [f64]) -> Result<(), String> {
        let mut prev_delta = f64::INFINITY;
        for sweep in 0..MAX_SWEEPS {
            let mut delta = 0.0f64;
            for &s in live {
                let s = s as usize;
                let mut v = self.b[s];
                for e in self.row_start[s]..self.row_start[s + 1] {
                    v += self.probs[e] * x[self.cols[e] as usize];
                }
                delta = delta.max((v - x[s]).abs());
                x[s] = v;
            }
            if delta == 0.0 {
                return Ok(());
            }
            let rho = delta / prev_delta;
            if sweep > 2 && rho < 1.0 && delta * rho / (1.0 - rho) < TOLERANCE {
                return Ok(());
            }
            prev_delta = delta;
        }
        Err(format!(
            "markov: the linear solve did not converge in {MAX_SWEEPS} sweeps"
        ))
    }
}

/// Solves `a·x = r` (`m × m`, row-major) by LU with partial pivoting.
fn lu_solve(a: &mut [f64], r: &mut [f64], m: usize) -> Result<Vec<f64>, String> {
    for k in 0..m {
        let p = (k..m)
            .max_by(|&i, &j| a[i * m + k].abs().total_cmp(&a[j * m + k].abs()))
            .unwrap_or(k);
        if a[p * m + k].abs() < 1e-300 {
            return Err("markov: singular transition system".into());
        }
        if p != k {
            for j in 0..m {
                a.swap(k * m + j, p * m + j);
            }
            r.swap(k, p);
        }
        let pivot = a[k * m + k];
        for i in k + 1..m {
            let f = a[i * m + k] / pivot;
            if f != 0.0 {
                for j in k..m {
                    a[i * m + j] -= f * a[k * m + j];
                }
                r[i] -= f * r[k];
            }
        }
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let mut s = r[i];
        for j in i + 1..m {
            s -= a[i * m + j] * x[j];
        }
        x[i] = s / a[i * m + i];
    }
    Ok(x)
}
