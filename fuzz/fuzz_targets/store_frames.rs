//! Any bytes on a store node's peer port: the frame reader, the request
//! decoder, and each mode's core fed the frames as peer messages.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(splitbrain_store::sim::feed_peer_bytes(data));
});
