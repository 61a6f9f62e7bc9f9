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
    validate_tenant(tenant)?;
    let mut file = load_tokens(data)?;
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
    file.format = FORMAT;
    file.tokens.push(rec.clone());
    save_tokens(data, &file)?;
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

/// The token file as the server sees it, reloaded when the file changes.
pub struct Tokens {
    data: PathBuf,
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
        let t = Tokens {
            data: data.to_path_buf(),
            state: Mutex::new(Loaded {
                loaded: false,
                stamp: None,
                entries: Vec::new(),
                error: None,
            }),
        };
        t.refresh();
        if let Some(e) = t.lock().error.clone() {
            return Err(e);
        }
        Ok(t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while holding this lock cannot leave it half-written (we swap whole values).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file if its modification time or length changed since the last read.
    /// A file that became unreadable keeps the last good tokens and is reported.
    pub fn refresh(&self) {
        let path = tokens_path(&self.data);
        let stamp = fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut st = self.lock();
        if st.loaded && st.stamp == stamp {
            return;
        }
        st.loaded = true;
        match load_tokens(&self.data) {
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

    /// Whether no token exists (open mode is possible on loopback).
    pub fn is_empty(&self) -> bool {
        self.refresh();
        self.lock().entries.is_empty()
    }

    /// The record of the token `presented`, compared by hash in constant time.
    pub fn check(&self, presented: &str) -> Option<Principal> {
        self.refresh();
        let h = blake3::hash(presented.as_bytes());
        let st = self.lock();
        let mut found = None;
        // No early exit: every entry is compared (blake3::Hash's == is constant-time).
        for (hash, rec) in &st.entries {
            if *hash == h {
                found = Some(rec);
            }
        }
        found.map(|r| Principal {
            tenant: r.tenant.clone(),
            admin: r.admin,
            read_only: r.read_only,
            token_id: Some(r.id.clone()),
        })
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
