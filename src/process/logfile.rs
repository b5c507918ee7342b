//! `logfile =`: log lines appended to a file, as PgBouncer does, reopened on SIGHUP so that
//! `logrotate` (rename, then `kill -HUP`) works the same way.
//!
//! [`LogFile`] is a `tracing_subscriber` writer: each formatted line is written whole under a
//! lock, so lines from several event loops never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An append-only log file that can be reopened. Clones share the file.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(open(path)?)),
        })
    }

    /// Opens the path again (after rotation moved the old file away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open(&self.path)?;
        if let Ok(mut f) = self.file.lock() {
            *f = fresh;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One line's writer (see [`tracing_subscriber::fmt::MakeWriter`]).
pub struct LineWriter(Arc<Mutex<File>>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("log file lock poisoned"))?;
        f.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.file.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[test]
    fn appends_and_reopens_after_rotation() {
        let dir = std::env::temp_dir().join(format!("pgheal-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgheal.log");
        std::fs::write(&path, "old line\n").unwrap();
        let log = LogFile::open(&path).unwrap();
        log.make_writer().write_all(b"first\n").unwrap();
        let rotated = dir.join("pgheal.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.make_writer().write_all(b"second\n").unwrap();
        log.reopen().unwrap();
        log.make_writer().write_all(b"third\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "old line\nfirst\nsecond\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
