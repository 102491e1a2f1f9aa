//! Any bytes read as a jsonl history: an error or a history, never a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitbrain_history::{Format, History};

fuzz_target!(|data: &[u8]| {
    let _ = History::parse("fuzz", data, Some(Format::Jsonl));
});
