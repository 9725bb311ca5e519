//! JSON lines from a file, gzip-compressed or not, or from standard input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct FileSourceError {
    path: String,
    source: io::Error,
}

/// A bounded source of JSON lines: one partition, positions are line numbers.
pub struct FileSource {
    name: String,
    reader: Box<dyn BufRead + Send>,
    line: i64,
}

impl FileSource {
    /// Opens `path`, or standard input for `-`. Gzip is recognised by its magic
    /// bytes, not by the file name.
    pub fn open(path: &Path) -> Result<Self, FileSourceError> {
        let name = path.display().to_string();
        let fail = |source| FileSourceError { path: name.clone(), source };
        let raw: Box<dyn Read + Send> = if path == Path::new("-") {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(fail)?)
        };
        let mut buffered = BufReader::with_capacity(1 << 20, raw);
        let is_gzip = buffered.fill_buf().map_err(fail)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + Send> = if is_gzip {
            Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(buffered)))
        } else {
            Box::new(buffered)
        };
        Ok(Self { name, reader, line: 0 })
    }

    /// Lines already in memory, as a source (the generated `--test-mode` sample).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Self {
        Self { name: name.to_owned(), reader: Box::new(io::Cursor::new(bytes)), line: 0 }
    }

    /// The source's name for dead-letter rows: its path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the next non-blank line into `buf` (cleared first) and returns its
    /// line number, or `None` at the end.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<i64>, FileSourceError> {
        loop {
            buf.clear();
            let read = self
                .reader
                .read_until(b'\n', buf)
                .map_err(|source| FileSourceError { path: self.name.clone(), source })?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            if !buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(self.line));
            }
        }
    }
}
