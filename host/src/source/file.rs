//! JSON lines from a file, gzip-compressed or not, or from standard input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct FileSourceError {
    path: String,
    source: io::Error,
}

/// A line read by [`FileSource::next_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Its number, from 1: the record's position.
    pub number: i64,
    /// Its whole length, of which the buffer may hold only the start.
    pub bytes: usize,
}

/// A bounded source of JSON lines: one partition, positions are line numbers.
pub struct FileSource {
    name: String,
    reader: Box<dyn BufRead + Send>,
    line: i64,
    /// Bytes read from the file (compressed, for gzip), for progress.
    bytes_read: Arc<AtomicU64>,
    /// The file's size, if it has one (standard input has none).
    total_bytes: Option<u64>,
}

/// Counts the bytes that pass through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl FileSource {
    /// Opens `path`, or standard input for `-`. Gzip is recognised by its magic
    /// bytes, not by the file name.
    pub fn open(path: &Path) -> Result<Self, FileSourceError> {
        let name = path.display().to_string();
        let fail = |source| FileSourceError { path: name.clone(), source };
        let (raw, total_bytes): (Box<dyn Read + Send>, _) = if path == Path::new("-") {
            (Box::new(io::stdin()), None)
        } else {
            let file = File::open(path).map_err(fail)?;
            let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(file), size)
        };
        let bytes_read = Arc::new(AtomicU64::new(0));
        let counted = Counted { inner: raw, count: bytes_read.clone() };
        let mut buffered = BufReader::with_capacity(1 << 20, counted);
        let is_gzip = buffered.fill_buf().map_err(fail)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + Send> = if is_gzip {
            Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(buffered)))
        } else {
            Box::new(buffered)
        };
        Ok(Self { name, reader, line: 0, bytes_read, total_bytes })
    }

    /// Lines already in memory, as a source (the generated `--test-mode` sample).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Self {
        let total_bytes = Some(bytes.len() as u64);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let reader = Counted { inner: io::Cursor::new(bytes), count: bytes_read.clone() };
        Self {
            name: name.to_owned(),
            reader: Box::new(BufReader::new(reader)),
            line: 0,
            bytes_read,
            total_bytes,
        }
    }

    /// The count of bytes read so far, shared: it goes on counting while
    /// another thread reads the source.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// The size of the input, when it has one (a file does, a pipe does not).
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// The source's name for dead-letter rows: its path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the next non-blank line into `buf` (cleared first), keeping at most
    /// `max_bytes + 1` of it: a line without an end (a corrupt file, a binary
    /// dump) must not fill memory. `None` at the end.
    pub fn next_line(
        &mut self,
        buf: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<Option<Line>, FileSourceError> {
        buf.clear();
        self.append_line(buf, max_bytes)
    }

    /// [`FileSource::next_line`], appended to what `buf` holds: lines read
    /// one after another into one buffer are copied once.
    pub fn append_line(
        &mut self,
        buf: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<Option<Line>, FileSourceError> {
        let start = buf.len();
        loop {
            buf.truncate(start);
            let mut bytes = 0;
            let mut ended = false;
            while !ended {
                let available = self
                    .reader
                    .fill_buf()
                    .map_err(|source| FileSourceError { path: self.name.clone(), source })?;
                if available.is_empty() {
                    break;
                }
                let (take, found) = match memchr::memchr(b'\n', available) {
                    Some(at) => (at + 1, true),
                    None => (available.len(), false),
                };
                let room = (max_bytes + 1).saturating_sub(buf.len() - start);
                buf.extend_from_slice(&available[..take.min(room)]);
                self.reader.consume(take);
                bytes += take;
                ended = found;
            }
            if bytes == 0 {
                return Ok(None);
            }
            self.line += 1;
            let whole = buf.len() - start == bytes;
            while buf.len() > start && matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            let line = &buf[start..];
            let bytes = if whole { line.len() } else { bytes - usize::from(ended) };
            if !whole || !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(Line { number: self.line, bytes }));
            }
        }
    }
}
