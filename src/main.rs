#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clicktrail::cli::{self, Command};
use clicktrail::config::Config;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
    };
    std::process::exit(code);
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
    Ok(config)
}
