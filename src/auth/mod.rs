//! Who may do what. A caller is a `Principal`: a name, roles and, optionally, the tenants it may
//! name. Principals come from the key file (`keyfile`), which holds only SHA-256 hashes of API
//! keys, the certificate subjects (CN) that map to principals under mTLS, and the opt-out token keys
//! (`token`). The file is read into an immutable `KeyTable` table behind an `ArcSwap`
//! (`KeyStore`): a request looks its key up in memory without a lock, and a reload (SIGHUP or a
//! changed file) swaps the whole table at once, so a request never sees half a file.
//!
//! This module decides; `api::auth` enforces (it is the one place requests are authenticated and
//! authorized). Nothing here knows about tonic or HTTP.

pub(crate) mod inbound;
pub(crate) mod keyfile;
pub(crate) mod token;
pub(crate) mod vault;

use crate::domain::Invalid;
use anyhow::Context;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::SystemTime,
};
pub use token::{Purpose, TokenKeys};
pub(crate) use token::{TokenClaims, TokenError};

/// What a principal may do. `Admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Role {
    /// `CheckSuppressed`, `CheckSuppressedBatch`.
    Check,
    /// `OptOut`, `GetReceipt`, `IssueOptOutToken`.
    Write,
    /// `WatchChanges`: the stream of changes, for the systems that keep lists of their own; nothing
    /// else.
    Watch,
    /// Everything, including RPCs added later (an RPC nobody classified needs `Admin`).
    Admin,
}

impl Role {
    pub(crate) fn parse(name: &str) -> Result<Role, Invalid> {
        match name {
            "check" => Ok(Role::Check),
            "write" => Ok(Role::Write),
            "watch" => Ok(Role::Watch),
            "admin" => Ok(Role::Admin),
            other => Err(Invalid::new(
                "roles",
                format!("unknown role {other:?} (check, write, watch or admin)"),
            )),
        }
    }
}

/// An authenticated caller. Its name is the actor recorded on opt-outs and the `principal` field of
/// traces; the key it used is never kept.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) name: String,
    roles: BTreeSet<Role>,
    /// `None`: every tenant.
    tenants: Option<BTreeSet<String>>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.name)
    }
}

impl Principal {
    pub(crate) fn new(
        name: impl Into<String>,
        roles: impl IntoIterator<Item = Role>,
        tenants: Option<BTreeSet<String>>,
    ) -> Self {
        Principal {
            name: name.into(),
            roles: roles.into_iter().collect(),
            tenants,
        }
    }

    /// The principal of a server started with `--dev-no-auth`: everything, every tenant. One for
    /// the process, shared by every call as a key's principal is (built per call, it was four
    /// allocations a call).
    pub(crate) fn development() -> Arc<Self> {
        static DEVELOPMENT: LazyLock<Arc<Principal>> =
            LazyLock::new(|| Arc::new(Principal::new("dev-no-auth", [Role::Admin], None)));
        DEVELOPMENT.clone()
    }

    pub(crate) fn has(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }

    pub(crate) fn may_use_tenant(&self, tenant: &str) -> bool {
        self.tenants.as_ref().is_none_or(|t| t.contains(tenant))
    }

    /// Whether the principal may use every tenant (its key names none).
    pub(crate) fn may_use_every_tenant(&self) -> bool {
        self.tenants.is_none()
    }
}

/// The hex SHA-256 of an API key, as the key file stores it. KeyTable are long random strings (see
/// `suppressd keys new`), so a fast hash is enough: there is nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh API key: 32 random bytes, URL-safe base64, with a recognisable prefix.
pub(crate) fn new_api_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "sk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// One immutable snapshot of the key file.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    by_key_hash: HashMap<[u8; 32], Arc<Principal>>,
    by_cert_cn: HashMap<String, Arc<Principal>>,
    pub(crate) tokens: TokenKeys,
    /// SMS provider accounts whose webhooks the HTTP front takes.
    pub(crate) inbound: inbound::InboundAccounts,
    /// The identifier vault's keys (none: no raw identifier is kept).
    pub(crate) vault: vault::VaultKeys,
}

impl KeyTable {
    /// The principal an API key belongs to.
    pub(crate) fn by_api_key(&self, key: &str) -> Option<Arc<Principal>> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_key_hash.get(&hash).cloned()
    }

    /// The principal a verified client certificate's subject CN maps to.
    pub(crate) fn by_cert_cn(&self, cn: &str) -> Option<Arc<Principal>> {
        self.by_cert_cn.get(cn).cloned()
    }

    pub(crate) fn principals(&self) -> usize {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for p in self.by_key_hash.values().chain(self.by_cert_cn.values()) {
            names.insert(&p.name);
        }
        names.len()
    }
}

/// The current key table and where it came from. Cheap to clone; every clone sees reloads.
#[derive(Clone)]
pub(crate) struct KeyStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    path: Option<PathBuf>,
    current: ArcSwap<KeyTable>,
    /// Modification time and length of the file last read, to notice a changed file.
    seen: std::sync::Mutex<Option<(SystemTime, u64)>>,
}

impl KeyStore {
    /// Reads the key file; a bad file stops start-up.
    pub(crate) fn load(path: &Path) -> anyhow::Result<KeyStore> {
        let keys = read(path)?;
        let store = KeyStore {
            inner: Arc::new(StoreInner {
                path: Some(path.to_owned()),
                current: ArcSwap::from_pointee(keys),
                seen: std::sync::Mutex::new(stamp(path)),
            }),
        };
        Ok(store)
    }

    /// A table that never changes (no file): `--dev-no-auth` without a key file, and unit tests.
    pub(crate) fn fixed(keys: KeyTable) -> KeyStore {
        KeyStore {
            inner: Arc::new(StoreInner {
                path: None,
                current: ArcSwap::from_pointee(keys),
                seen: std::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn current(&self) -> Arc<KeyTable> {
        self.inner.current.load_full()
    }

    /// A person's token of `purpose`, verified at `now` with the keys in force: shared by the gRPC
    /// API and the HTTP front. The reason of a refusal goes to the log; callers tell the person
    /// only that the token was refused.
    pub(crate) fn verify_person_token(
        &self,
        token: &str,
        purpose: Purpose,
        now: crate::domain::Millis,
    ) -> Result<TokenClaims, TokenError> {
        self.current()
            .tokens
            .verify(token, purpose, now)
            .inspect_err(|e| {
                tracing::info!(reason = %e, purpose = purpose.as_str(), "person's token refused");
            })
    }

    /// Reads the file again and swaps the table in. A file that does not parse leaves the old table
    /// in force (and says why): a typo must not lock every caller out.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let Some(path) = &self.inner.path else {
            return Ok(());
        };
        let stamp_before = stamp(path);
        let keys = read(path)?;
        tracing::info!(
            principals = keys.principals(),
            token_keys = keys.tokens.len(),
            inbound_numbers = keys.inbound.len(),
            vault_keys = keys.vault.len(),
            "key file reloaded"
        );
        self.inner.current.store(Arc::new(keys));
        *self.inner.seen.lock().expect("not poisoned") = stamp_before;
        Ok(())
    }

    /// Reloads if the file's modification time or length changed since it was last read.
    pub(crate) fn reload_if_changed(&self) {
        let Some(path) = &self.inner.path else {
            return;
        };
        let now = stamp(path);
        if now.is_none() || *self.inner.seen.lock().expect("not poisoned") == now {
            return;
        }
        if let Err(e) = self.reload() {
            // Remember the broken version so the error is logged once, not on every poll.
            *self.inner.seen.lock().expect("not poisoned") = now;
            tracing::error!(
                error = format!("{e:#}"),
                "key file not reloaded; the old keys stay"
            );
        }
    }
}

/// The vault keys of the table in force: a reload that rotates them applies to the next seal.
impl crate::domain::IdentifierVault for KeyStore {
    fn seal(&self, identifier: &str, receipt: &str) -> Option<crate::domain::SealedIdentifier> {
        self.current()
            .vault
            .seal(identifier, receipt)
            .map(crate::domain::SealedIdentifier)
    }

    fn open(&self, sealed: &[u8], receipt: &str) -> Result<String, String> {
        self.current()
            .vault
            .open(sealed, receipt)
            .map_err(|e| format!("{e:#}"))
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Why the key file is exposed, if it is: readable or writable by group or others (it holds token
/// secrets, and API key hashes that would let a reader test guesses offline). `None` when only its
/// owner may read it, or on a platform without Unix permissions.
pub(crate) fn key_file_exposure(path: &Path) -> anyhow::Result<Option<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading the key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Ok(Some(format!(
                "the key file {} is open to group or others (mode {:03o}); make it private \
                 with `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }
    Ok(None)
}

fn read(path: &Path) -> anyhow::Result<KeyTable> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    keyfile::parse(&text).with_context(|| format!("in the key file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_every_role_and_tenants_restrict() {
        let admin = Principal::new("a", [Role::Admin], None);
        assert!(admin.has(Role::Check) && admin.has(Role::Write) && admin.may_use_tenant("x"));
        let acme = Principal::new("b", [Role::Check], Some(["acme".to_owned()].into()));
        assert!(acme.has(Role::Check) && !acme.has(Role::Write));
        assert!(
            acme.may_use_tenant("acme") && !acme.may_use_tenant("") && !acme.may_use_tenant("x")
        );
    }

    #[test]
    fn new_keys_are_random_and_hash_to_hex() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with("sk_") && a.len() > 40);
        assert_eq!(hash_key(&a).len(), 64);
    }
}
