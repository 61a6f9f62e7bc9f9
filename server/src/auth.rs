//! Bearer tokens: `<data>/tokens.json` keeps, per token, only the BLAKE3 hash of its 256-bit
//! random secret, its tenant, its scopes, when it was made and a short id for listing and
//! revocation. The file is written atomically (temp file, fsync, rename, folder fsync); a
//! running server reloads it when its modification time or length changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The token file's name inside the data folder.
pub const TOKENS_FILE: &str = "tokens.json";
/// What every token starts with, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "cairn_";
/// The tenant served without tokens on a loopback address.
pub const DEFAULT_TENANT: &str = "default";
const FORMAT: u32 = 1;

/// One token as stored (never the secret itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short id for listing and revocation (`tok_` + 12 hex digits).
    pub id: String,
    /// BLAKE3 of the whole token string, 64 hex digits.
    pub hash: String,
    /// The tenant the token acts for.
    pub tenant: String,
    /// Reaches `/v1/admin/*` (stats, gc, verify of its tenant's store) and `/metrics`.
    pub admin: bool,
    /// Cannot write (403 `forbidden` on every write).
    pub read_only: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// What a token file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenFile {
    /// The file format (1).
    pub format: u32,
    /// The tokens, oldest first.
    pub tokens: Vec<TokenRecord>,
}

/// Who is calling: the tenant and what the caller may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The tenant whose store every call acts on.
    pub tenant: String,
    /// May reach the admin routes.
    pub admin: bool,
    /// May not write.
    pub read_only: bool,
    /// The token id, `None` in open (no-token, loopback) mode.
    pub token_id: Option<String>,
}

/// Checks a tenant name: 1-64 characters of `[a-z0-9_-]`, starting with a letter or digit.
/// The name is a folder under `tenants/`, so nothing else may pass.
pub fn validate_tenant(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant {name:?}: use 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        ))
    }
}

fn tokens_path(data: &Path) -> PathBuf {
    data.join(TOKENS_FILE)
}

/// Reads `<data>/tokens.json`; a missing file is an empty list.
pub fn load_tokens(data: &Path) -> Result<TokenFile, String> {
    crate::jsonfile::load(
        data,
        TOKENS_FILE,
        "a token file",
        "restore it from a backup or remove it and create tokens again",
        FORMAT,
        |f: &TokenFile| f.format,
        || TokenFile {
            format: FORMAT,
            tokens: Vec::new(),
        },
    )
}

/// Writes the token file atomically (see [`crate::jsonfile::save`]): a crash leaves the old
/// file or the new one, never half.
pub fn save_tokens(data: &Path, file: &TokenFile) -> Result<(), String> {
    crate::jsonfile::save(data, TOKENS_FILE, file)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a new token for `tenant`, stores its hash in `<data>/tokens.json`, and returns the
/// token (shown once, never stored) with its record.
pub fn create_token(
    data: &Path,
    tenant: &str,
    admin: bool,
    read_only: bool,
) -> Result<(String, TokenRecord), String> {
    let mut file = load_tokens(data)?;
    let (token, rec) = new_token(tenant, admin, read_only)?;
    file.format = FORMAT;
    file.tokens.push(rec.clone());
    save_tokens(data, &file)?;
    Ok((token, rec))
}

/// A new random token for `tenant` and its record (not stored yet).
fn new_token(tenant: &str, admin: bool, read_only: bool) -> Result<(String, TokenRecord), String> {
    validate_tenant(tenant)?;
    let secret = random_bytes::<32>()?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
    let id = format!("tok_{}", hex(&random_bytes::<6>()?));
    let rec = TokenRecord {
        id,
        hash: blake3::hash(token.as_bytes()).to_hex().to_string(),
        tenant: tenant.to_string(),
        admin,
        read_only,
        created_at: Utc::now(),
    };
    Ok((token, rec))
}

/// Removes the token with this id. Returns the removed record, or an error naming the id.
pub fn revoke_token(data: &Path, id: &str) -> Result<TokenRecord, String> {
    let mut file = load_tokens(data)?;
    let Some(pos) = file.tokens.iter().position(|t| t.id == id) else {
        return Err(format!(
            "no token with id {id:?}; `cairn token list` shows the ids"
        ));
    };
    let rec = file.tokens.remove(pos);
    save_tokens(data, &file)?;
    Ok(rec)
}

/// Where tokens live: `<data>/tokens.json` (one server), or, with `--metadata postgres://...`,
/// the shared database (every server sees a token created or revoked through any of them at
/// once). The database keeps them in the key space `server_tokens` (the table
/// `cairn_kv_server_tokens`, created and versioned by the metadata engine's migrations):
/// `h` + BLAKE3 of the token (32 bytes) -> the record as JSON; `i` + id -> that hash.
#[derive(Clone)]
pub enum TokenPlace {
    /// `tokens.json` in this data folder.
    File(PathBuf),
    /// The shared PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(std::sync::Arc<cairn::PostgresBackend>),
}

/// The PostgreSQL key space that holds the tokens of every server on one database.
pub const TOKENS_NAMESPACE: &str = "server_tokens";

impl TokenPlace {
    /// The place for a server configuration: the database when `metadata` names one.
    pub fn new(data: &Path, metadata: Option<&str>) -> Result<Self, String> {
        match metadata {
            None => Ok(TokenPlace::File(data.to_path_buf())),
            #[cfg(feature = "postgres")]
            Some(url) => blocking(|| cairn::PostgresBackend::connect(url, TOKENS_NAMESPACE))
                .map(|b| TokenPlace::Postgres(std::sync::Arc::new(b)))
                .map_err(|e| format!("the token table: {e}")),
            #[cfg(not(feature = "postgres"))]
            Some(_) => Err(
                "this build has no PostgreSQL support: rebuild it with the cargo \
                            feature `postgres`"
                    .into(),
            ),
        }
    }

    /// Whether the tokens are shared through a database.
    pub fn is_shared(&self) -> bool {
        !matches!(self, TokenPlace::File(_))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord>, String> {
        match self {
            TokenPlace::File(d) => load_tokens(d).map(|f| f.tokens),
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(b) => {
                use cairn::Backend;
                let rows = blocking(|| b.scan(b"h", b"i", false, usize::MAX))
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity(rows.len());
                for (_, v) in rows {
                    out.push(decode_record(&v)?);
                }
                out.sort_by_key(|r| r.created_at);
                Ok(out)
            }
        }
    }

    /// Makes a new token for `tenant` and returns it (shown once, never stored) with its record.
    pub fn create(
        &self,
        tenant: &str,
        admin: bool,
        read_only: bool,
    ) -> Result<(String, TokenRecord), String> {
        match self {
            TokenPlace::File(d) => create_token(d, tenant, admin, read_only),
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(b) => {
                use cairn::Backend;
                let (token, rec) = new_token(tenant, admin, read_only)?;
                let hash = blake3::hash(token.as_bytes());
                let json = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
                blocking(|| {
                    b.apply(vec![
                        cairn::Op::Put(hash_key(&hash), json),
                        cairn::Op::Put(id_key(&rec.id), hash.as_bytes().to_vec()),
                    ])
                })
                .map_err(|e| e.to_string())?;
                Ok((token, rec))
            }
        }
    }

    /// Removes the token with this id. Returns the removed record, or an error naming the id.
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, String> {
        match self {
            TokenPlace::File(d) => revoke_token(d, id),
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(b) => {
                use cairn::Backend;
                let missing =
                    || format!("no token with id {id:?}; `cairn token list` shows the ids");
                let hash = blocking(|| b.get(&id_key(id)))
                    .map_err(|e| e.to_string())?
                    .ok_or_else(missing)?;
                let mut hkey = b"h".to_vec();
                hkey.extend_from_slice(&hash);
                let rec = blocking(|| b.get(&hkey)).map_err(|e| e.to_string())?;
                blocking(|| b.apply(vec![cairn::Op::Delete(hkey), cairn::Op::Delete(id_key(id))]))
                    .map_err(|e| e.to_string())?;
                match rec {
                    Some(v) => decode_record(&v),
                    None => Err(missing()),
                }
            }
        }
    }
}

/// Runs `f`, which talks to PostgreSQL through the blocking client, so that it may be called
/// from anywhere: on a worker of the server's (multi-thread) runtime the worker is handed over
/// for the call (`block_in_place`: the blocking client cannot run inside a runtime), elsewhere
/// (the CLI, blocking threads) it simply runs.
#[cfg(feature = "postgres")]
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(feature = "postgres")]
fn hash_key(h: &blake3::Hash) -> Vec<u8> {
    let mut k = b"h".to_vec();
    k.extend_from_slice(h.as_bytes());
    k
}

#[cfg(feature = "postgres")]
fn id_key(id: &str) -> Vec<u8> {
    let mut k = b"i".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(feature = "postgres")]
fn decode_record(v: &[u8]) -> Result<TokenRecord, String> {
    serde_json::from_slice(v).map_err(|e| {
        format!(
            "a token record in the database ({TOKENS_NAMESPACE}) is not valid JSON ({e}); revoke \
             it and create the token again"
        )
    })
}

/// The tokens as the server sees them: the file, reloaded when it changes, or the database,
/// asked on every request (one primary-key read), so a revocation through any server holds at
/// once on all.
pub struct Tokens {
    place: TokenPlace,
    state: Mutex<Loaded>,
}

struct Loaded {
    loaded: bool,
    stamp: Option<(SystemTime, u64)>,
    entries: Vec<(blake3::Hash, TokenRecord)>,
    error: Option<String>,
}

impl Tokens {
    /// Loads `<data>/tokens.json` (an unreadable file is an error at start).
    pub fn open(data: &Path) -> Result<Self, String> {
        Self::open_at(TokenPlace::File(data.to_path_buf()))
    }

    /// Opens the tokens at `place` (an unreadable file or database is an error at start).
    pub fn open_at(place: TokenPlace) -> Result<Self, String> {
        let t = Tokens {
            place,
            state: Mutex::new(Loaded {
                loaded: false,
                stamp: None,
                entries: Vec::new(),
                error: None,
            }),
        };
        match &t.place {
            TokenPlace::File(_) => {
                t.refresh();
                if let Some(e) = t.lock().error.clone() {
                    return Err(e);
                }
            }
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(_) => {
                t.any()?;
            }
        }
        Ok(t)
    }

    /// Where the tokens live.
    pub fn place(&self) -> &TokenPlace {
        &self.place
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while holding this lock cannot leave it half-written (we swap whole values).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file if its modification time or length changed since the last read.
    /// A file that became unreadable keeps the last good tokens and is reported.
    pub fn refresh(&self) {
        let TokenPlace::File(data) = &self.place else {
            return;
        };
        let path = tokens_path(data);
        let stamp = fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut st = self.lock();
        if st.loaded && st.stamp == stamp {
            return;
        }
        st.loaded = true;
        match load_tokens(data) {
            Ok(f) => {
                let mut entries = Vec::with_capacity(f.tokens.len());
                for t in f.tokens {
                    match blake3::Hash::from_hex(&t.hash) {
                        Ok(h) => entries.push((h, t)),
                        Err(_) => {
                            st.error = Some(format!(
                                "{}: token {} has a malformed hash; revoke it",
                                path.display(),
                                t.id
                            ));
                        }
                    }
                }
                st.entries = entries;
                st.stamp = stamp;
                st.error = None;
            }
            Err(e) => {
                st.stamp = stamp;
                st.error = Some(e);
            }
        }
    }

    /// Whether any token exists (an error: the database could not be asked).
    pub fn any(&self) -> Result<bool, String> {
        match &self.place {
            TokenPlace::File(_) => {
                self.refresh();
                Ok(!self.lock().entries.is_empty())
            }
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(b) => {
                use cairn::Backend;
                blocking(|| b.scan(b"h", b"i", false, 1))
                    .map(|v| !v.is_empty())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Whether no token exists (open mode is possible on loopback). A database that cannot be
    /// asked counts as "tokens exist": never open by accident.
    pub fn is_empty(&self) -> bool {
        matches!(self.any(), Ok(false))
    }

    /// The record of the token `presented`: compared by hash in constant time (file), or
    /// looked up by its hash (database: the key is a 256-bit hash of a 256-bit secret, so the
    /// lookup's timing tells nothing about a token's secret). An error: the database could
    /// not be asked.
    pub fn lookup(&self, presented: &str) -> Result<Option<Principal>, String> {
        let h = blake3::hash(presented.as_bytes());
        let principal = |r: &TokenRecord| Principal {
            tenant: r.tenant.clone(),
            admin: r.admin,
            read_only: r.read_only,
            token_id: Some(r.id.clone()),
        };
        match &self.place {
            TokenPlace::File(_) => {
                self.refresh();
                let st = self.lock();
                let mut found = None;
                // No early exit: every entry is compared (blake3::Hash's == is constant-time).
                for (hash, rec) in &st.entries {
                    if *hash == h {
                        found = Some(rec);
                    }
                }
                Ok(found.map(principal))
            }
            #[cfg(feature = "postgres")]
            TokenPlace::Postgres(b) => {
                use cairn::Backend;
                match blocking(|| b.get(&hash_key(&h))).map_err(|e| e.to_string())? {
                    Some(v) => decode_record(&v).map(|r| Some(principal(&r))),
                    None => Ok(None),
                }
            }
        }
    }

    /// The record of the token `presented`; `None` when unknown, revoked or not checkable.
    pub fn check(&self, presented: &str) -> Option<Principal> {
        self.lookup(presented).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_revoke() {
        let d = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(d.path()).unwrap();
        assert!(tokens.is_empty());
        let (tok, rec) = create_token(d.path(), "acme", false, true).unwrap();
        assert!(tok.starts_with(TOKEN_PREFIX) && tok.len() == TOKEN_PREFIX.len() + 64);
        let text = fs::read_to_string(d.path().join(TOKENS_FILE)).unwrap();
        assert!(
            !text.contains(&tok[TOKEN_PREFIX.len()..]),
            "the secret is never stored"
        );
        let p = tokens
            .check(&tok)
            .expect("the new token is seen without restart");
        assert_eq!(p.tenant, "acme");
        assert!(p.read_only && !p.admin);
        assert!(tokens.check("cairn_00").is_none());
        revoke_token(d.path(), &rec.id).unwrap();
        assert!(tokens.check(&tok).is_none());
        assert!(revoke_token(d.path(), &rec.id)
            .unwrap_err()
            .contains("no token"));
    }

    #[test]
    fn tenant_names_are_folder_safe() {
        for bad in ["", "../x", "A", "a/b", "-a", &"a".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
        for good in ["default", "acme-1", "t_2"] {
            assert!(validate_tenant(good).is_ok(), "{good:?}");
        }
    }
}
