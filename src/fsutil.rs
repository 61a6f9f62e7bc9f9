//! The one atomic-write helper: a named temporary file beside (or staged for) the destination,
//! written, fsynced, renamed into place, and the directory fsynced, so that after a crash the
//! destination holds either its old content or the whole new content, never a part.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `dest` atomically and durably. The temporary file is created in `tmp_dir`
/// (same file system as `dest`) with a unique name, and removed if anything fails.
pub(crate) fn atomic_write(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-")
        .suffix(".tmp")
        .tempfile_in(tmp_dir)
        .map_err(|e| Error::io(tmp_dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    sync_dir(dest.parent().unwrap_or(tmp_dir))
}

/// Streams `write` into a temporary file beside `dest` (a unique hidden name, never a fixed one
/// that could clobber a user's file), then fsyncs, renames it over `dest` and fsyncs the
/// directory. On any error the temporary file is removed and `dest` is untouched.
pub(crate) fn atomic_write_with<T>(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let out = {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let out = write(&mut w)?;
        w.flush().map_err(|e| Error::io(dest, e))?;
        out
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    sync_dir(dir)?;
    Ok(out)
}

/// Renames an already written and fsynced temporary file to `dest` and fsyncs the directory.
/// If `tmp` is gone but `dest` exists (a second attempt of the same install), that is success.
pub(crate) fn install(tmp: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(tmp, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => return Ok(()),
        Err(e) => return Err(Error::io(dest, e)),
    }
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory, making the names created or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("f");
        atomic_write(d.path(), &dest, b"one").unwrap();
        atomic_write(d.path(), &dest, b"two!").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two!");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn install_twice_is_one_install() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, dest) = (d.path().join("t"), d.path().join("f"));
        std::fs::write(&tmp, b"x").unwrap();
        install(&tmp, &dest).unwrap();
        install(&tmp, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert!(install(&d.path().join("none"), &d.path().join("g")).is_err());
    }
}
