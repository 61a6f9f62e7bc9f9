//! The one way the command line writes a file the user named: atomically, durably, and without
//! touching anything else in the folder.
//!
//! The bytes go to a temporary file with a unique name in the target's own folder (so the final
//! rename never crosses file systems), which is fsynced, renamed over the target
//! ([`tempfile::NamedTempFile::persist`]) and followed by an fsync of the folder, so the new name
//! survives a power loss. Until the rename the target keeps its old content; a failure (or a
//! panic) removes the temporary file, because `NamedTempFile` deletes itself when dropped.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::context::{CliResult, Failure};

/// Creates or replaces `dest` with what `fill` writes, atomically (see the module doc). Returns
/// what `fill` returns. Write errors inside `fill` should be mapped with the path they are
/// given (the temporary file's).
pub fn write_file<T>(
    dest: &Path,
    fill: impl FnOnce(&mut dyn Write, &Path) -> CliResult<T>,
) -> CliResult<T> {
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Failure::invalid(
                "output path",
                format!("{} names no file; give a file path", dest.display()),
            )
        })?;
    let folder = folder_of(dest);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".cairn-tmp")
        .tempfile_in(&folder)
        .map_err(|e| Failure::io(&folder, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let value = {
        let mut w = BufWriter::with_capacity(256 << 10, tmp.as_file_mut());
        let value = fill(&mut w, &tmp_path)?;
        w.flush().map_err(|e| Failure::io(&tmp_path, e))?;
        value
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| Failure::io(&tmp_path, e))?;
    tmp.persist(dest).map_err(|e| Failure::io(dest, e.error))?;
    sync_folder(&folder).map_err(|e| Failure::io(&folder, e))?;
    Ok(value)
}

/// [`write_file`] for bytes already in memory.
pub fn write_bytes(dest: &Path, bytes: &[u8]) -> CliResult {
    write_file(dest, |w, tmp| {
        w.write_all(bytes).map_err(|e| Failure::io(tmp, e))
    })
}

/// The folder a relative or absolute file path lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename in `folder` durable. Directories cannot be opened for syncing on Windows,
/// where the rename is made durable by the file system itself.
fn sync_folder(folder: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(folder)?.sync_all()
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_target_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("state.json");
        // Files a fixed temporary name could have clobbered.
        for bystander in ["state.cairn-partial", ".state.json.tmp", "state.json.tmp"] {
            std::fs::write(dir.path().join(bystander), b"mine").unwrap();
        }
        std::fs::write(&dest, b"old").unwrap();
        write_bytes(&dest, b"new content").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new content");
        assert_eq!(
            names(dir.path()),
            [
                ".state.json.tmp",
                "state.cairn-partial",
                "state.json",
                "state.json.tmp"
            ]
        );
        for bystander in ["state.cairn-partial", ".state.json.tmp", "state.json.tmp"] {
            assert_eq!(std::fs::read(dir.path().join(bystander)).unwrap(), b"mine");
        }
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        std::fs::write(&dest, b"old").unwrap();
        let r: CliResult = write_file(&dest, |w, _| {
            w.write_all(b"half").unwrap();
            Err(Failure::invalid("content", "stopped on purpose"))
        });
        assert!(r.unwrap_err().message.contains("stopped on purpose"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[test]
    fn a_missing_folder_or_no_file_name_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_bytes(&dir.path().join("no/such/folder/x"), b"x").unwrap_err();
        assert_eq!((e.code.as_str(), e.exit), ("io", 1));
        assert!(e.message.contains("no/such/folder"), "{}", e.message);
        let e = write_bytes(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.exit, 5, "{}", e.message);
    }
}
