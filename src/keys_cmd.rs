//! `clicktrail keys create --role ROLE [--owner ID]`: makes an API key on a stopped server's
//! data directory (the journal's lock refuses a running one), prints it once, stores only
//! its SHA-256. For a configuration without an admin key, where every admin call would
//! answer 401 and the API cannot make the first key.

use crate::config::Config;
use clicktrail_actors::catalog::{ApiKey, Entity, EntityStore, Role};
use clicktrail_storage::Journal;

/// Reads `N` bytes from the kernel's CSPRNG (keys, postback secrets and ids).
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// A new API key's secret: `ct_` and 32 URL-safe characters from the kernel's CSPRNG
/// (the API's `POST /keys` and `keys create` alike).
pub fn new_secret() -> std::io::Result<String> {
    let raw = random_bytes::<24>()?;
    Ok(format!(
        "ct_{}",
        crate::edge::click_id::base64url_encode(&raw)
    ))
}

/// Creates the key; returns the process exit status (0 ok, 1 failed).
pub fn create(config: &Config, role: Role, owner: &str) -> i32 {
    let data_dir = &config.journal.data_dir;
    let result = (|| -> anyhow::Result<String> {
        use anyhow::Context;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let journal = Journal::open(data_dir, config.journal_config()).with_context(|| {
            format!(
                "cannot open the journal in {} (stop the server first)",
                data_dir.display()
            )
        })?;
        let store = EntityStore::open(&journal).context("cannot read the entities")?;
        let secret = new_secret().context("no randomness available")?;
        let key = ApiKey::new(&secret, role, owner);
        actix_rt::System::new()
            .block_on(store.upsert("cli", Entity::Key(key)))
            .context("cannot record the key")?;
        journal.close().context("cannot sync the journal")?;
        Ok(secret)
    })();
    match result {
        Ok(secret) => {
            println!("{secret}");
            eprintln!(
                "clicktrail: a {} key for {owner:?} was created in {}; it is shown only now: \
                 keep it (use it as Authorization: Bearer <key>)",
                role_name(role),
                data_dir.display()
            );
            0
        }
        Err(e) => {
            eprintln!("clicktrail: {e:#}");
            1
        }
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Merchant => "merchant",
        Role::Partner => "partner",
    }
}

/// Parses a role name as the command line takes it.
pub fn parse_role(s: &str) -> Option<Role> {
    Some(match s {
        "admin" => Role::Admin,
        "merchant" => Role::Merchant,
        "partner" => Role::Partner,
        _ => return None,
    })
}
