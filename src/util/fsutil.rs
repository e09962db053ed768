//! Writes that never leave a half-finished file or directory behind: content
//! goes to a sibling temp path and is renamed into place only when complete.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::error::{Error, Result};

fn parent_and_name(target: &Path) -> Result<(PathBuf, String)> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    Ok((parent, name))
}

/// A buffered file that appears at its final path only after `commit`.
/// The temp file sits beside the target (same filesystem, so the rename is
/// atomic) and is deleted if dropped without commit, e.g. on an error.
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        let (parent, name) = parent_and_name(&target)?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(AtomicFile {
            target,
            writer: BufWriter::with_capacity(1 << 20, temp),
        })
    }

    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.writer
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| Error::io(&self.target, e))
    }

    pub fn commit(self) -> Result<()> {
        let temp = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&self.target, e.into_error()))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| Error::io(&self.target, e))?;
        temp.persist(&self.target)
            .map_err(|e| Error::io(&self.target, e.error))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// A directory that is filled in a temp location and swapped in whole by
/// `commit`; an existing directory at the target is replaced only then.
/// Dropped without commit, the temp directory is deleted.
pub struct AtomicDir {
    target: PathBuf,
    temp: TempDir,
}

impl AtomicDir {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        let (parent, name) = parent_and_name(&target)?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(AtomicDir { target, temp })
    }

    /// Where to write the contents before `commit`.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let temp = self.temp.keep();
        let swap = |from: &Path, to: &Path| fs::rename(from, to).map_err(|e| Error::io(to, e));
        if target.exists() {
            let old = target.with_file_name(format!(
                ".{}.old-{}",
                target.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            swap(&target, &old)?;
            if let Err(e) = swap(&temp, &target) {
                // Put the previous directory back rather than leave none.
                let _ = fs::rename(&old, &target);
                let _ = fs::remove_dir_all(&temp);
                return Err(e);
            }
            let _ = fs::remove_dir_all(&old);
            Ok(())
        } else {
            swap(&temp, &target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_and_old_content_survives() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"new but abandoned").unwrap();
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dir_is_replaced_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cache");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"1").unwrap();
        {
            let d = AtomicDir::create(&target).unwrap();
            fs::write(d.path().join("partial"), b"x").unwrap();
        }
        assert!(target.join("keep").exists());
        let d = AtomicDir::create(&target).unwrap();
        fs::write(d.path().join("fresh"), b"x").unwrap();
        d.commit().unwrap();
        assert!(target.join("fresh").exists() && !target.join("keep").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
