//! `suppressd keys …`: makes what goes into the key file. An API key is printed once, here; the file
//! only ever holds its hash.

use crate::{auth, cli::args::KeysCommand};
use anyhow::Context;

/// `suppressd keys …`: prints what goes into the key file. The API key is printed once, here; the
/// file only ever holds its hash.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New {
            name,
            roles,
            tenants,
            key_out,
        } => {
            for role in &roles {
                auth::Role::parse(role)?;
            }
            let key = auth::new_api_key();
            let quote = |v: &[String]| {
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // Never on standard output: that is the entry, which goes into the key file.
            match key_out {
                Some(path) => {
                    write_private(&path, &format!("{key}\n"))?;
                    eprintln!(
                        "API key for {name:?} written to {} (give it to the caller; the key \
                         file holds only its hash)",
                        path.display()
                    );
                }
                None => eprintln!(
                    "API key for {name:?} (give it to the caller; the key file holds only its \
                     hash):\n{key}"
                ),
            }
            println!("[[principal]]");
            println!("name = {name:?}");
            println!("roles = [{}]", quote(&roles));
            if !tenants.is_empty() {
                println!("tenants = [{}]", quote(&tenants));
            }
            println!("key_sha256 = [\"{}\"]", auth::hash_key(&key));
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            println!("{}", auth::hash_key(key.trim()));
        }
        KeysCommand::TokenKey { id } => {
            let secret: [u8; 32] = rand::random();
            println!("[[token_key]]");
            println!("id = {id:?}");
            println!("secret = \"{}\"", hex::encode(secret));
            println!("issue = true");
        }
    }
    Ok(())
}

/// Creates `path` (never overwriting) readable by its owner alone, and writes `text` into it.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
