//! The ingest step both runs share: a block of parsed records into the engine,
//! and every record that is not accepted into the dead letters with its reason.

use crate::engine::{Admission, Engine};
use crate::event::{BlockRecord, EventBlock};
use crate::sink::RejectedEvent;

/// Offers the events of `block` to `engine`; rejected records and late events
/// go to `dead_letters`, named after `source`. `seen` hears the partition of
/// every record. Returns how many records were not valid events.
pub(crate) fn ingest(
    block: &EventBlock,
    engine: &mut Engine,
    source: &str,
    dead_letters: &mut Vec<RejectedEvent>,
    mut seen: impl FnMut(i32),
) -> u64 {
    let mut rejected = 0;
    let dead_letter = |partition, position, raw: &str, reason: String| RejectedEvent {
        raw: raw.to_owned(),
        reason,
        source: source.to_owned(),
        partition,
        position,
    };
    for record in block.records() {
        match record {
            BlockRecord::Event(partition, position, raw, event) => {
                seen(partition);
                if let Admission::Late { behind_ms } = engine.offer(partition as usize, &event) {
                    let reason = format!("late: {behind_ms} ms beyond the allowed lateness");
                    dead_letters.push(dead_letter(partition, position, raw, reason));
                }
            }
            BlockRecord::Rejected(partition, position, raw, reason) => {
                seen(partition);
                rejected += 1;
                dead_letters.push(dead_letter(partition, position, raw, reason.to_string()));
            }
        }
    }
    rejected
}
