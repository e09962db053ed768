//! Writes that never leave a half-finished file or directory behind: content
//! goes to a sibling temp path and is renamed into place only when complete.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn sibling_temp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// A buffered file that appears at its final path only after `commit`.
/// Dropped without commit (an error on the way), the temp file is removed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let temp = sibling_temp(&target);
        let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        Ok(AtomicFile {
            target,
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("writer present until commit")
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let temp = self.temp.clone();
        self.writer()
            .write_all(bytes)
            .map_err(|e| Error::io(temp, e))
    }

    pub fn commit(mut self) -> Result<()> {
        let w = self.writer.take().expect("commit once");
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&self.temp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = fs::remove_file(&self.temp);
        }
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
pub struct AtomicDir {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub fn create(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let temp = sibling_temp(&target);
        if temp.exists() {
            fs::remove_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
        }
        fs::create_dir(&temp).map_err(|e| Error::io(&temp, e))?;
        Ok(AtomicDir {
            target,
            temp,
            committed: false,
        })
    }

    /// Where to write the contents before `commit`.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    pub fn commit(mut self) -> Result<()> {
        if self.target.exists() {
            let old = self.target.with_file_name(format!(
                ".{}.old-{}",
                self.target
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                std::process::id()
            ));
            fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.temp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
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
