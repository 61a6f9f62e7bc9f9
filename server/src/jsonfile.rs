//! The server's small state files (`tokens.json`, `webhooks.json`): versioned JSON documents
//! read whole and written atomically. One copy of the load and save rules for both.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads `dir/name` as a `T` whose format (read by `format_of`) must be `format`; a missing file
/// is `empty`. `what` names the document in errors ("a token file") and `remedy` says what a
/// user can do about a damaged one.
pub(crate) fn load<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    what: &str,
    remedy: &str,
    format: u32,
    format_of: impl Fn(&T) -> u32,
    empty: impl FnOnce() -> T,
) -> Result<T, String> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let f: T = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not {what} ({e}); {remedy}", path.display()))?;
    let found = format_of(&f);
    if found != format {
        return Err(format!(
            "{} has format {found}, this server reads format {format}",
            path.display()
        ));
    }
    Ok(f)
}

/// Writes `value` to `dir/name` atomically: a temporary file (mode 0600: these files hold
/// secrets or their hashes) in the same folder, fsync, rename over the old one, fsync of the
/// folder. A crash leaves the old file or the new one, never half of one.
pub(crate) fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        serde_json::to_writer_pretty(&mut f, value).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
