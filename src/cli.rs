//! Command-line parsing (kept by hand: four flags do not warrant a parser dependency).

use std::net::SocketAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
clicktrail — self-hosted affiliate and partner tracking server

USAGE:
    clicktrail serve [--config PATH] [--data-dir DIR] [--listen ADDR] [--allow-private-postbacks]
    clicktrail journal verify  [--config PATH] [--data-dir DIR]
    clicktrail journal inspect [--config PATH] [--data-dir DIR]
    clicktrail journal accept-damage --partition NAME [--config PATH] [--data-dir DIR]
    clicktrail keys create --role admin|merchant|partner [--owner ID] [--config PATH] [--data-dir DIR]
    clicktrail attribution fit --journeys FILE --model M [--order K] [--json]
    clicktrail attribution export --data-dir DIR [--campaign ID] [--from T --to T] > journeys.csv
    clicktrail fraud eval [--seed N] [--scale F] [--json] [--keep DIR]
    clicktrail --help | --version

serve      runs the server; without --config it uses the built-in demo configuration
           (data in ./data, listening on 127.0.0.1:8080; demo keys demo-admin-key,
           demo-merchant-key, demo-partner-key). Flags override the file:
             --config PATH   a TOML configuration (see config/clicktrail.toml)
             --data-dir DIR  where the journal lives
             --listen ADDR   the HTTP address, e.g. 127.0.0.1:8080
             --allow-private-postbacks
                             postbacks may go to private addresses (also
                             CLICKTRAIL_ALLOW_PRIVATE_POSTBACKS=1); demo mode already
                             allows loopback
journal    verify checks every record's CRC and exits non-zero if anything is corrupt,
           naming each damaged range and how many intact records follow it;
           inspect lists partitions, segments, record counts and last offsets;
           accept-damage records that the damage of one partition is known, so the
           server is ready again (the damaged records stay skipped, their copies stay).
           Run them on a stopped server.
keys       create makes an API key (printed once, stored hashed) on a stopped server's
           data directory: the way to the first admin key when the configuration has
           none. --owner defaults to admin for admin keys; a merchant or partner key
           needs the merchant's or affiliate's id.
attribution
           fit reads grouped journeys (CSV: path,total_conversions,total_null
           [,total_conversion_value], channels joined by '>') and prints each
           channel's credit; no server needed. --model last-click, first-click,
           linear, position-based, markov (--order 1..4, default 1) or shapley.
           --json prints one JSON object instead of a table.
           export writes a stopped server's journeys in that format.
fraud      eval measures the fraud engine: it generates 28 days of seeded, labelled
           traffic (legitimate content, coupon, e-mail and social partners; every fraud
           pattern the rules target, at realistic rates), imports it into a fresh
           server it starts on a temporary data directory and a free loopback port,
           waits for the scorer and prints precision, recall and false-positive rate
           per pattern, per rule and overall, for clicks and for conversions, against
           the targets (under 0.5% of legitimate conversions flagged, at least 95% of
           fraudulent ones). Exit code 0 whatever the numbers, 1 if the run failed.
             --seed N    the traffic's seed (default 1)
             --scale F   multiplies the volumes (default 1: ~220k clicks, ~5-6k
                         conversions)
             --json      one JSON object instead of the tables
             --keep DIR  keep the configuration, traffic (traffic.ndjson), labels
                         (labels.csv), report.json, server log and data directory in
                         DIR (new or empty)

Environment: RUST_LOG sets the log level (default: info).
";

/// Options shared by the commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// `--allow-private-postbacks`: postbacks may go to private addresses.
    pub allow_private_postbacks: bool,
    /// `keys create`: the new key's role and owner.
    pub role: Option<String>,
    pub owner: Option<String>,
    /// The partition `journal accept-damage` acts on.
    pub partition: Option<String>,
    /// `attribution export`: one campaign, and the period the journeys ended in.
    pub campaign: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalAction {
    Verify,
    Inspect,
    AcceptDamage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(Options),
    Journal(JournalAction, Options),
    /// `keys create`, with `role` (and maybe `owner`) set in the options.
    KeysCreate(Options),
    /// `attribution export`: a stopped node's journeys as grouped CSV.
    AttributionExport(Options),
    /// `attribution fit`: no server, no configuration.
    AttributionFit {
        journeys: PathBuf,
        model: String,
        order: Option<usize>,
        json: bool,
    },
    /// `fraud eval`: starts its own server; no configuration.
    FraudEval(crate::fraud_eval::Options),
    Help,
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let cmd = match args.next().as_deref() {
        None | Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("serve") => "serve",
        Some("journal") => match args.next().as_deref() {
            Some("verify") => "verify",
            Some("inspect") => "inspect",
            Some("accept-damage") => "accept-damage",
            Some(other) => {
                return Err(format!(
                    "unknown journal command {other:?}: use verify, inspect or accept-damage"
                ))
            }
            None => return Err("journal needs a command: verify, inspect or accept-damage".into()),
        },
        Some("attribution") => match args.next().as_deref() {
            Some("fit") => return parse_fit(args),
            Some("export") => "attribution-export",
            _ => return Err("attribution needs a command: fit or export".into()),
        },
        Some("fraud") => match args.next().as_deref() {
            Some("eval") => return parse_eval(args),
            _ => return Err("fraud needs a command: eval".into()),
        },
        Some("keys") => match args.next().as_deref() {
            Some("create") => "keys-create",
            _ => return Err("keys needs a command: create".into()),
        },
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    let mut o = Options::default();
    let asked_help = each_flag(&mut args, |name, inline, value| {
        match name {
            "--allow-private-postbacks" if cmd == "serve" && !inline => {
                o.allow_private_postbacks = true
            }
            "--config" => o.config = Some(value()?.into()),
            "--role" if cmd == "keys-create" => o.role = Some(value()?),
            "--owner" if cmd == "keys-create" => o.owner = Some(value()?),
            "--data-dir" => o.data_dir = Some(value()?.into()),
            "--listen" if cmd == "serve" => {
                let v = value()?;
                o.listen = Some(v.parse().map_err(|_| {
                    format!("--listen: {v:?} is not an address like 127.0.0.1:8080")
                })?);
            }
            "--partition" if cmd == "accept-damage" => o.partition = Some(value()?),
            "--campaign" if cmd == "attribution-export" => o.campaign = Some(value()?),
            "--from" if cmd == "attribution-export" => o.from = Some(value()?),
            "--to" if cmd == "attribution-export" => o.to = Some(value()?),
            _ => return Err(format!("unknown option {name:?} for {cmd}")),
        }
        Ok(())
    })?;
    if asked_help {
        return Ok(Command::Help);
    }
    if cmd == "keys-create" && o.role.is_none() {
        return Err("keys create needs --role admin, merchant or partner".into());
    }
    Ok(match cmd {
        "serve" => Command::Serve(o),
        "keys-create" => Command::KeysCreate(o),
        "attribution-export" => Command::AttributionExport(o),
        "verify" => Command::Journal(JournalAction::Verify, o),
        "accept-damage" if o.partition.is_none() => {
            return Err("accept-damage needs --partition NAME (see journal verify)".into())
        }
        "accept-damage" => Command::Journal(JournalAction::AcceptDamage, o),
        _ => Command::Journal(JournalAction::Inspect, o),
    })
}

/// Walks the flags (`--name value` or `--name=value`): `on(name, inline, value)` handles
/// one, `inline` telling whether it came with `=value` and `value()` taking its value.
/// Answers whether help was asked for (`-h`, `--help`).
fn each_flag(
    args: &mut impl Iterator<Item = String>,
    mut on: impl FnMut(&str, bool, &mut dyn FnMut() -> Result<String, String>) -> Result<(), String>,
) -> Result<bool, String> {
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(true);
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let has_inline = inline.is_some();
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        on(&name, has_inline, &mut value)?;
    }
    Ok(false)
}

/// `attribution fit --journeys FILE --model M [--order K] [--json]`.
fn parse_fit(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let (mut journeys, mut model, mut order, mut json) = (None, None, None, false);
    let asked_help = each_flag(&mut args, |name, inline, value| {
        match name {
            "--journeys" => journeys = Some(PathBuf::from(value()?)),
            "--model" => model = Some(value()?),
            "--order" => {
                let v = value()?;
                order = Some(
                    v.parse()
                        .ok()
                        .filter(|k| (1..=4).contains(k))
                        .ok_or_else(|| format!("--order {v:?}: use 1, 2, 3 or 4"))?,
                );
            }
            "--json" if !inline => json = true,
            _ => return Err(format!("unknown option {name:?} for attribution fit")),
        }
        Ok(())
    })?;
    if asked_help {
        return Ok(Command::Help);
    }
    let journeys = journeys.ok_or("attribution fit needs --journeys FILE")?;
    let model = model.ok_or("attribution fit needs --model")?;
    if order.is_some() && model != "markov" {
        return Err("--order is for --model markov only".into());
    }
    Ok(Command::AttributionFit {
        journeys,
        model,
        order,
        json,
    })
}

/// `fraud eval [--seed N] [--scale F] [--json] [--keep DIR]`.
fn parse_eval(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut o = crate::fraud_eval::Options::default();
    let asked_help = each_flag(&mut args, |name, inline, value| {
        match name {
            "--seed" => {
                let v = value()?;
                o.seed = v
                    .parse()
                    .map_err(|_| format!("--seed {v:?}: a whole number"))?;
            }
            "--scale" => {
                let v = value()?;
                o.scale = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= 20.0)
                    .ok_or_else(|| format!("--scale {v:?}: a number above 0, at most 20"))?;
            }
            "--json" if !inline => o.json = true,
            "--keep" => o.keep = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown option {name:?} for fraud eval")),
        }
        Ok(())
    })?;
    if asked_help {
        return Ok(Command::Help);
    }
    Ok(Command::FraudEval(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(p("").unwrap(), Command::Help);
        assert_eq!(p("serve").unwrap(), Command::Serve(Options::default()));
        let Command::Serve(o) =
            p("serve --config c.toml --data-dir=/d --listen 0.0.0.0:9").unwrap()
        else {
            panic!()
        };
        assert_eq!(o.config.unwrap(), PathBuf::from("c.toml"));
        assert_eq!(o.data_dir.unwrap(), PathBuf::from("/d"));
        assert_eq!(
            o.listen.unwrap(),
            "0.0.0.0:9".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            p("journal verify --data-dir x").unwrap(),
            Command::Journal(
                JournalAction::Verify,
                Options {
                    data_dir: Some("x".into()),
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn parses_accept_damage() {
        assert_eq!(
            p("journal accept-damage --partition ingest-0 --data-dir d").unwrap(),
            Command::Journal(
                JournalAction::AcceptDamage,
                Options {
                    data_dir: Some("d".into()),
                    partition: Some("ingest-0".into()),
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn refuses_bad_input_clearly() {
        assert!(p("serve --listen nope").unwrap_err().contains("--listen"));
        assert!(p("serve --config").unwrap_err().contains("needs a value"));
        assert!(p("serve --bogus").unwrap_err().contains("--bogus"));
        assert!(p("journal")
            .unwrap_err()
            .contains("verify, inspect or accept-damage"));
        assert!(p("journal accept-damage")
            .unwrap_err()
            .contains("--partition"));
        assert!(p("journal verify --partition x").is_err());
        assert!(p("journal inspect --listen 1.2.3.4:5").is_err());
        assert!(p("launch").is_err());
        assert!(p("keys create").unwrap_err().contains("--role"));
        assert!(p("keys").unwrap_err().contains("create"));
        let Command::KeysCreate(o) = p("keys create --role admin --data-dir d").unwrap() else {
            panic!()
        };
        assert_eq!((o.role.as_deref(), o.owner), (Some("admin"), None));
    }

    #[test]
    fn parses_fraud_eval() {
        use crate::fraud_eval::Options as Eval;
        assert_eq!(
            p("fraud eval").unwrap(),
            Command::FraudEval(Eval::default())
        );
        assert_eq!(
            p("fraud eval --seed 7 --scale=0.25 --json --keep out").unwrap(),
            Command::FraudEval(Eval {
                seed: 7,
                scale: 0.25,
                json: true,
                keep: Some("out".into()),
            })
        );
        assert!(p("fraud").unwrap_err().contains("eval"));
        assert!(p("fraud eval --seed x").unwrap_err().contains("--seed"));
        assert!(p("fraud eval --scale 0").unwrap_err().contains("--scale"));
        assert!(p("fraud eval --scale nan").is_err());
        assert!(p("fraud eval --data-dir d").is_err());
    }

    #[test]
    fn parses_attribution_fit() {
        assert_eq!(
            p("attribution fit --journeys j.csv --model markov --order 3 --json").unwrap(),
            Command::AttributionFit {
                journeys: "j.csv".into(),
                model: "markov".into(),
                order: Some(3),
                json: true
            }
        );
        assert_eq!(
            p("attribution fit --model=linear --journeys=j").unwrap(),
            Command::AttributionFit {
                journeys: "j".into(),
                model: "linear".into(),
                order: None,
                json: false
            }
        );
        assert!(p("attribution").unwrap_err().contains("fit"));
        assert_eq!(
            p("attribution export --data-dir d --campaign c1 --from 2026-12-01 --to=2026-12-02")
                .unwrap(),
            Command::AttributionExport(Options {
                data_dir: Some("d".into()),
                campaign: Some("c1".into()),
                from: Some("2026-12-01".into()),
                to: Some("2026-12-02".into()),
                ..Options::default()
            })
        );
        assert!(p("attribution export --listen 127.0.0.1:1").is_err());
        assert!(p("attribution fit --model x")
            .unwrap_err()
            .contains("--journeys"));
        assert!(p("attribution fit --journeys j")
            .unwrap_err()
            .contains("--model"));
        assert!(p("attribution fit --journeys j --model markov --order 5")
            .unwrap_err()
            .contains("1, 2, 3 or 4"));
        assert!(p("attribution fit --journeys j --model linear --order 2").is_err());
        assert!(p("attribution fit --journeys j --model linear --data-dir d").is_err());
    }
}
