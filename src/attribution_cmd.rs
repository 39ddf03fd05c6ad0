//! `clicktrail attribution fit`: fits an attribution model on grouped journeys (the CSV
//! `attribution export` writes, or ChannelAttribution's format) and prints each channel's
//! credit. Offline: no server, no configuration.

use clicktrail_actors::attribution::models::{
    fit_markov, fit_shapley, heuristic_credit, Grouped, Rule, SHAPLEY_EXACT_MAX,
};
use std::fmt::Write as _;
use std::path::Path;

/// The models `--model` takes.
pub const MODELS: [&str; 6] = [
    "last-click",
    "first-click",
    "linear",
    "position-based",
    "markov",
    "shapley",
];

/// The Shapley sampling seed: fixed, so a file always gives the same figures.
const SHAPLEY_SEED: u64 = 18;

/// Why a fit failed: the input (exit code 2) or the computation (1).
#[derive(Debug)]
pub enum FitError {
    Input(String),
    Model(String),
}

/// Runs the command; returns the exit code (2 for bad input).
pub fn fit(journeys: &Path, model: &str, order: Option<usize>, json: bool) -> i32 {
    let text = match std::fs::read_to_string(journeys) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("clicktrail: {}: {e}", journeys.display());
            return 2;
        }
    };
    match fit_text(&text, model, order, json) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(FitError::Input(e)) => {
            eprintln!("clicktrail: {}: {e}", journeys.display());
            2
        }
        Err(FitError::Model(e)) => {
            eprintln!("clicktrail: {e}");
            1
        }
    }
}

/// The fit's output for a CSV text: JSON (one line) or a table.
pub fn fit_text(
    text: &str,
    model: &str,
    order: Option<usize>,
    json: bool,
) -> Result<String, FitError> {
    if !MODELS.contains(&model) {
        return Err(FitError::Input(format!(
            "unknown model {model:?}: use one of {}",
            MODELS.join(", ")
        )));
    }
    let g = Grouped::parse_csv(text).map_err(FitError::Input)?;
    let n = g.channels.len();
    let (mut removal, mut p_conversion, mut std_error, mut fit_order) = (None, None, None, None);
    let credit: Vec<(f64, f64)> = match model {
        "markov" => {
            let k = order.unwrap_or(1);
            let m = fit_markov(&g, k).map_err(FitError::Model)?;
            removal = Some(m.removal_effects);
            p_conversion = Some(m.p_conversion);
            fit_order = Some(k);
            m.conversions.into_iter().zip(m.value).collect()
        }
        "shapley" => {
            let s = fit_shapley(&g, SHAPLEY_EXACT_MAX, SHAPLEY_SEED);
            std_error = Some(s.max_std_error);
            s.conversions.into_iter().zip(s.value).collect()
        }
        rule => {
            let rule: Rule = rule.parse().map_err(FitError::Input)?;
            heuristic_credit(&g, rule)
        }
    };
    debug_assert_eq!(credit.len(), n);
    let num = |x: f64| serde_json::to_string(&x).unwrap_or_else(|_| "null".into());
    let name = |i: usize| serde_json::to_string(&g.channels[i]).unwrap_or_default();
    let mut out = String::new();
    if json {
        let order_text = fit_order.map_or("null".to_string(), |k| k.to_string());
        let _ = write!(
            out,
            "{{\"model\":{},\"order\":{order_text},\"channels\":{{",
            num_str(model)
        );
        for (i, (c, v)) in credit.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{sep}{}:{{\"conversions\":{},\"value\":{}}}",
                name(i),
                num(*c),
                num(*v)
            );
        }
        out.push('}');
        if let Some(re) = &removal {
            out.push_str(",\"removal_effects\":{");
            for (i, r) in re.iter().enumerate() {
                let sep = if i > 0 { "," } else { "" };
                let _ = write!(out, "{sep}{}:{}", name(i), num(*r));
            }
            out.push('}');
        }
        if let Some(p) = p_conversion {
            let _ = write!(out, ",\"p_conversion\":{}", num(p));
        }
        if let Some(se) = std_error {
            let _ = write!(out, ",\"max_std_error\":{}", num(se));
        }
        out.push_str("}\n");
        return Ok(out);
    }
    let (total_conv, total_null, total_value) = g.totals();
    let _ = writeln!(
        out,
        "model {model}{}: {} channels, {} paths, {total_conv} conversions, {total_null} nulls, value {total_value}",
        fit_order.map_or(String::new(), |k| format!(" (order {k})")),
        n,
        g.paths.len()
    );
    if let Some(p) = p_conversion {
        let _ = writeln!(out, "P(conversion) {p:.6}");
    }
    if let Some(se) = std_error.filter(|&se| se > 0.0) {
        let _ = writeln!(out, "largest sampled share standard error {se:.6}");
    }
    let width = g.channels.iter().map(|c| c.len()).max().unwrap_or(0).max(7);
    let _ = write!(
        out,
        "{:<width$}  {:>14}  {:>7}  {:>16}",
        "channel", "conversions", "share", "value"
    );
    if removal.is_some() {
        let _ = write!(out, "  {:>14}", "removal effect");
    }
    out.push('\n');
    let mut rows: Vec<usize> = (0..n).collect();
    rows.sort_by(|&a, &b| credit[b].0.total_cmp(&credit[a].0).then(a.cmp(&b)));
    for i in rows {
        let (c, v) = credit[i];
        let share = if total_conv > 0.0 {
            100.0 * c / total_conv
        } else {
            0.0
        };
        let _ = write!(
            out,
            "{:<width$}  {c:>14.4}  {share:>6.2}%  {v:>16.4}",
            g.channels[i]
        );
        if let Some(re) = &removal {
            let _ = write!(out, "  {:>14.6}", re[i]);
        }
        out.push('\n');
    }
    Ok(out)
}

fn num_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "path,total_conversions,total_null,total_conversion_value\n\
        A > B,2,1,2\nA > C,1,2,1\nB,1,3,1\nC > A > B,1,0,1\nB > A > B,0,2,0\nA > A > C,1,1,1\n";

    fn parsed(model: &str, order: Option<usize>) -> serde_json::Value {
        let out = fit_text(EXAMPLE, model, order, true).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    fn f(v: &serde_json::Value) -> f64 {
        v.as_f64().unwrap()
    }

    #[test]
    fn json_for_every_model() {
        let m = parsed("markov", None);
        assert_eq!(m["model"], "markov");
        assert_eq!(m["order"], 1);
        assert!((f(&m["p_conversion"]) - 0.4).abs() < 1e-12);
        assert!((f(&m["removal_effects"]["B"]) - 44.0 / 61.0).abs() < 1e-12);
        let s = parsed("shapley", None);
        assert!(s["order"].is_null());
        assert!((f(&s["channels"]["B"]["conversions"]) - 2.975).abs() < 1e-12);
        assert_eq!(f(&s["max_std_error"]), 0.0);
        let l = parsed("linear", None);
        assert!((f(&l["channels"]["A"]["value"]) - 2.5).abs() < 1e-12);
        assert!(l.get("removal_effects").is_none());
        assert_eq!(parsed("markov", Some(2))["order"], 2);
        for model in MODELS {
            assert!(fit_text(EXAMPLE, model, None, false)
                .unwrap()
                .contains("channel"));
        }
    }

    #[test]
    fn json_keeps_the_documented_key_order() {
        let out = fit_text(EXAMPLE, "markov", None, true).unwrap();
        assert!(out.starts_with("{\"model\":\"markov\",\"order\":1,\"channels\":{\"A\":{"));
        let re = out.find("\"removal_effects\"").unwrap();
        assert!(re < out.find("\"p_conversion\"").unwrap());
    }

    #[test]
    fn bad_input_is_an_input_error() {
        assert!(matches!(
            fit_text(EXAMPLE, "nope", None, true),
            Err(FitError::Input(e)) if e.contains("shapley")
        ));
        assert!(matches!(
            fit_text("path,x\n", "linear", None, true),
            Err(FitError::Input(e)) if e.contains("line 1")
        ));
    }
}
