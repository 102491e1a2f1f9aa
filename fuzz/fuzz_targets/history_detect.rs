//! Any bytes read as a history of whatever format they look like.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitbrain_history::History;

fuzz_target!(|data: &[u8]| {
    let _ = History::parse("fuzz", data, None);
});
