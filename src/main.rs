#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clicktrail::cli::{self, Command};
use clicktrail::config::Config;

fn main() {
    clicktrail::http::sampled_log::SampledLogger::init();
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clicktrail: {e}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };
    let code = match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            0
        }
        Command::Version => {
            println!("clicktrail {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Serve(opts) => match load(&opts) {
            Ok(config) => match clicktrail::server::serve(config) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("clicktrail: {e:#}");
                    1
                }
            },
            Err(code) => code,
        },
        Command::Journal(action, opts) => match load(&opts) {
            Ok(c) => {
                clicktrail::journal_cmd::run(action, opts.partition.as_deref(), &c.journal.data_dir)
            }
            Err(code) => code,
        },
        Command::KeysCreate(opts) => keys_create(&opts),
        Command::AttributionExport(opts) => attribution_export(&opts),
        Command::AttributionFit {
            journeys,
            model,
            order,
            json,
        } => clicktrail::attribution_cmd::fit(&journeys, &model, order, json),
        Command::FraudEval(opts) => clicktrail::fraud_eval::run(&opts),
    };
    std::process::exit(code);
}

/// `attribution export`: the journeys as grouped CSV on standard output.
fn attribution_export(opts: &cli::Options) -> i32 {
    let config = match load(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, i32> {
        v.as_deref()
            .map(|t| {
                clicktrail::http::time::parse_text(t).map_err(|e| {
                    eprintln!("clicktrail: --{name}: {e}");
                    2
                })
            })
            .transpose()
    };
    let (from, to) = match (time("from", &opts.from), time("to", &opts.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    match clicktrail::attribution_export::export(&config, opts.campaign.as_deref(), from, to) {
        Ok(csv) => {
            print!("{csv}");
            0
        }
        Err(e) => {
            eprintln!("clicktrail: {e:#}");
            1
        }
    }
}

/// `keys create`: checks the role and owner, then makes the key.
fn keys_create(opts: &cli::Options) -> i32 {
    use clicktrail::keys_cmd;
    let role = opts.role.as_deref().unwrap_or_default();
    let Some(role) = keys_cmd::parse_role(role) else {
        eprintln!("clicktrail: --role {role:?}: admin, merchant or partner");
        return 2;
    };
    let owner = match (&opts.owner, role) {
        (Some(o), _) => o.clone(),
        (None, clicktrail_actors::catalog::Role::Admin) => "admin".to_string(),
        (None, _) => {
            eprintln!(
                "clicktrail: a merchant or partner key needs --owner <merchant or affiliate id>"
            );
            return 2;
        }
    };
    match load(opts) {
        Ok(config) => keys_cmd::create(&config, role, &owner),
        Err(code) => code,
    }
}

/// Loads the configuration and applies the command-line overrides.
fn load(opts: &cli::Options) -> Result<Config, i32> {
    let mut config = Config::load(opts.config.as_deref()).map_err(|e| {
        eprintln!("clicktrail: {e}");
        2
    })?;
    if let Some(d) = &opts.data_dir {
        config.journal.data_dir = d.clone();
    }
    if let Some(l) = opts.listen {
        config.server.listen = l;
    }
    let env_allows = std::env::var("CLICKTRAIL_ALLOW_PRIVATE_POSTBACKS")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    if opts.allow_private_postbacks || env_allows {
        config.postbacks.allow_private_destinations = true;
    }
    Ok(config)
}
