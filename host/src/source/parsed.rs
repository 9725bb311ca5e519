//! A file's lines parsed into [`EventBlock`]s on several threads, handed out
//! in the file's order.
//!
//! Parsing costs more than anything else per event, and a bounded run has a
//! whole file to parse: one thread reads chunks of lines (cheap: a search for
//! newlines and a copy), the workers parse them, and the blocks come back in
//! the order the chunks were read. Chunks go to the workers in turn, so the
//! k-th block is the next one from worker `k % workers`: order costs no
//! reordering buffer, and lateness, judged in arrival order, sees the file's.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use super::file::{FileSource, FileSourceError};
use crate::event::{EventBlock, EventLimits, FieldPaths};

/// Lines per chunk, and so records per block.
const CHUNK_LINES: usize = 8192;
/// Chunks queued to each worker, and blocks queued from it.
const QUEUED_PER_WORKER: usize = 2;

/// Lines read from the file and not parsed yet: their bytes one after the other.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: Vec<ChunkLine>,
}

/// One line of a [`Chunk`].
struct ChunkLine {
    /// Its line number (the record's position).
    number: i64,
    /// Where it ends in the chunk's bytes (it starts where the last ended).
    end: usize,
    /// Its whole length, of which only the start was kept when it is over
    /// the limit.
    bytes: usize,
}

/// The blocks of a file being parsed, in the file's order.
pub struct ParsedFile {
    /// One per worker: block `k` comes from `blocks[k % blocks.len()]`.
    blocks: Vec<Receiver<Result<EventBlock, FileSourceError>>>,
    next: usize,
    threads: Vec<JoinHandle<()>>,
    done: bool,
}

impl ParsedFile {
    /// Starts reading `source` and parsing it within `limits`, for the
    /// declared `fields`, on `workers` threads (at least one); with
    /// `hash_users`, the blocks carry each event's user hash
    /// ([`EventBlock::hashing_users`]) for engines that split the users.
    pub fn start(
        source: FileSource,
        limits: EventLimits,
        fields: Arc<FieldPaths>,
        workers: usize,
        hash_users: bool,
    ) -> Self {
        let workers = workers.max(1);
        let mut chunk_senders = Vec::with_capacity(workers);
        let mut blocks = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers + 1);
        for _ in 0..workers {
            let (chunk_tx, chunk_rx) = mpsc::sync_channel(QUEUED_PER_WORKER);
            let (block_tx, block_rx) = mpsc::sync_channel(QUEUED_PER_WORKER);
            let fields = fields.clone();
            threads.push(thread::spawn(move || {
                yield_to_the_engine();
                parse_chunks(chunk_rx, block_tx, limits, fields, hash_users)
            }));
            chunk_senders.push(chunk_tx);
            blocks.push(block_rx);
        }
        threads.push(thread::spawn(move || {
            yield_to_the_engine();
            read_chunks(source, limits, chunk_senders)
        }));
        Self { blocks, next: 0, threads, done: false }
    }
}

impl Iterator for ParsedFile {
    type Item = Result<EventBlock, FileSourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let worker = &self.blocks[self.next % self.blocks.len()];
        self.next += 1;
        // Chunks are dealt in turn, so the first worker with nothing more
        // marks the end of the file (or a failure, reported in its place).
        match worker.recv() {
            Ok(Ok(block)) => Some(Ok(block)),
            Ok(Err(error)) => {
                self.done = true;
                Some(Err(error))
            }
            Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

impl Drop for ParsedFile {
    fn drop(&mut self) {
        // Closing the receivers stops the workers, whose end stops the reader.
        self.blocks.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Lowers the calling thread's priority. The engines' threads are the ones
/// the run waits for; parsing fills the cores' spare time and is kept ahead
/// by its queues.
fn yield_to_the_engine() {
    // SAFETY: gettid and setpriority only read their arguments; a failure
    // leaves the priority as it was, which is harmless.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, 10);
    }
}

/// Reads `source` into chunks, dealt to `workers` in turn; a read error goes
/// to the worker whose turn it is, and ends the reading.
fn read_chunks(
    mut source: FileSource,
    limits: EventLimits,
    workers: Vec<SyncSender<Result<Chunk, FileSourceError>>>,
) {
    for turn in (0..workers.len()).cycle() {
        let mut chunk = Chunk {
            bytes: Vec::with_capacity(CHUNK_LINES * 256),
            lines: Vec::with_capacity(CHUNK_LINES),
        };
        let mut end = false;
        while chunk.lines.len() < CHUNK_LINES {
            match source.append_line(&mut chunk.bytes, limits.max_record_bytes) {
                Ok(Some(read)) => {
                    let end = chunk.bytes.len();
                    chunk.lines.push(ChunkLine { number: read.number, end, bytes: read.bytes });
                }
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(error) => {
                    let _ = workers[turn].send(Err(error));
                    return;
                }
            }
        }
        let empty = chunk.lines.is_empty();
        if (!empty && workers[turn].send(Ok(chunk)).is_err()) || end {
            return;
        }
    }
}

/// Parses the chunks from `chunks` into blocks sent to `blocks`, until
/// either side closes.
fn parse_chunks(
    chunks: Receiver<Result<Chunk, FileSourceError>>,
    blocks: SyncSender<Result<EventBlock, FileSourceError>>,
    limits: EventLimits,
    fields: Arc<FieldPaths>,
    hash_users: bool,
) {
    for chunk in chunks {
        let parsed = chunk.map(|chunk| {
            // The records' text, and some room for unescaped copies of fields.
            let room = chunk.bytes.len() + chunk.bytes.len() / 16;
            let mut block = EventBlock::with_capacity(chunk.lines.len(), room, limits)
                .with_fields(fields.clone());
            if hash_users {
                block = block.hashing_users();
            }
            let mut start = 0;
            for line in &chunk.lines {
                let record = &chunk.bytes[start..line.end];
                start = line.end;
                if line.bytes > record.len() {
                    block.push_oversized(0, line.number, record, line.bytes);
                } else {
                    block.push(0, line.number, record);
                }
            }
            block
        });
        if blocks.send(parsed).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(file: ParsedFile) -> Vec<i64> {
        let mut positions = Vec::new();
        for block in file {
            for record in block.expect("a block").records() {
                positions.push(match record {
                    crate::event::BlockRecord::Event(_, position, ..) => position,
                    crate::event::BlockRecord::Rejected(_, position, ..) => -position,
                    crate::event::BlockRecord::Elsewhere(..) => unreachable!("a whole block"),
                });
            }
        }
        positions
    }

    #[test]
    fn blocks_come_back_in_the_files_order_whatever_the_workers() {
        let lines = 3 * CHUNK_LINES + 17;
        let mut text = String::new();
        for i in 1..=lines {
            if i % 1000 == 0 {
                text.push_str("not json\n");
            } else {
                text.push_str(&format!("{{\"uuid\":\"u{i}\",\"event_timestamp\":{i}}}\n"));
            }
        }
        let expected: Vec<i64> =
            (1..=lines as i64).map(|i| if i % 1000 == 0 { -i } else { i }).collect();
        for workers in [1, 2, 3, 5] {
            let source = FileSource::from_bytes("t", text.clone().into_bytes());
            let file =
                ParsedFile::start(source, EventLimits::default(), Arc::default(), workers, false);
            assert_eq!(positions(file), expected, "{workers} workers");
        }
    }

    #[test]
    fn an_empty_file_has_no_blocks() {
        let source = FileSource::from_bytes("t", Vec::new());
        let file = ParsedFile::start(source, EventLimits::default(), Arc::default(), 2, false);
        assert_eq!(positions(file), Vec::<i64>::new());
    }

    #[test]
    fn oversized_lines_are_kept_as_rejected() {
        let limits = EventLimits { max_record_bytes: 64, ..EventLimits::default() };
        let long = format!("{{\"uuid\":\"{}\",\"event_timestamp\":1}}\n", "x".repeat(100));
        let text = format!("{long}{{\"uuid\":\"a\",\"event_timestamp\":2}}\n");
        let source = FileSource::from_bytes("t", text.into_bytes());
        let file = ParsedFile::start(source, limits, Arc::default(), 2, false);
        assert_eq!(positions(file), vec![-1, 2]);
    }
}
