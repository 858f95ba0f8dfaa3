//! Crash-safe file writes: write to a temporary file in the same directory, fsync it, rename it
//! over the target, fsync the directory. A reader sees either the old or the new file, never a
//! half-written one.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written (same directory, so rename is atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// fsync a directory so that a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(d, e))
}

/// Atomically replace `path` with the bytes produced by `fill` (which writes into a buffered file).
pub fn atomic_write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let res = (|| -> std::io::Result<()> {
        let f = File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Refuse `path` when something is there already: files named by the user (`flag`) are only
/// ever written new, never replaced.
pub fn check_new_file(path: &Path, flag: &str) -> Result<()> {
    match path.symlink_metadata() {
        Ok(_) => Err(Error::InvalidArgument(format!(
            "{flag} {}: already exists; twindex writes it only to a new path (it never replaces a file)",
            path.display()
        ))),
        Err(_) => Ok(()),
    }
}

/// Write a new file `path` with the bytes produced by `fill`, whole or not at all, and never
/// over anything: written and fsynced under a temporary name, then hard-linked to `path`, which
/// fails if something appeared there meanwhile (a rename would replace it).
pub fn atomic_write_new(
    path: &Path,
    flag: &str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    check_new_file(path, flag)?;
    let tmp = temp_path(path);
    let res = (|| -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(File::create(&tmp)?);
        fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_new_file(path, flag),
        Err(e) => Err(Error::io(path, e)),
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
    }
}

/// Atomically replace `path` with `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// Atomically write `value` as pretty JSON.
pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_vec_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        cause: e,
    })?;
    atomic_write(path, &s)
}

/// Read and parse a JSON file, naming the file on any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        cause: e,
    })
}

/// Read a regular file whole. Anything else (a FIFO, a device, a directory) is refused with a
/// message naming it, rather than blocking or reading forever.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let md = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a FIFO, device or directory): give a file",
        ));
    }
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// Open a regular file for reading; anything else is refused as in [`read_regular`].
pub fn open_regular(path: &Path) -> Result<File> {
    let md = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a FIFO, device or directory): give a file",
        ));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_new_writes_once_and_never_over_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.tsv");
        atomic_write_new(&p, "--out", |w| w.write_all(b"first")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        let e = atomic_write_new(&p, "--out", |w| w.write_all(b"second"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
        // A failing fill leaves nothing behind, not even its temporary file.
        let q = dir.path().join("q.tsv");
        let bad = atomic_write_new(&q, "--out", |_| Err(std::io::Error::other("boom")));
        assert!(bad.is_err() && !q.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
