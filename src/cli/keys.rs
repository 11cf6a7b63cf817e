//! `suppressd keys …`: makes what goes into the key file. An API key is printed once, here; the file
//! only ever holds its hash.

use crate::{auth, cli::args::KeysCommand};

/// `suppressd keys …`: prints what goes into the key file. The API key is printed once, here; the
/// file only ever holds its hash.
pub fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New {
            name,
            roles,
            tenants,
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
            eprintln!("API key for {name:?} (give it to the caller; it is not stored):");
            println!("# API key: {key}");
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
