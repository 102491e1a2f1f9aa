//! Any bytes on a store node's client or peer port: the frame reader, the
//! request decoder, and each mode's core fed the frames as peer messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitbrain_store::codec::{decode, decode_id_prefix, read_frame};
use splitbrain_store::config::Mode;
use splitbrain_store::core::{build_core, Bytes, Input, PeerMsg};
use splitbrain_store::msg::Request;
use splitbrain_store::sim::Sim;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let frames: Vec<Vec<u8>> = rt.block_on(async {
        let mut input = data;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = read_frame(&mut input, 1 << 16).await {
            frames.push(frame);
        }
        frames
    });
    for mode in [Mode::SingleLeader, Mode::Leaderless] {
        let mut cfg = Sim::cluster(3);
        cfg.mode = mode;
        let mut core = build_core(&cfg, 0, 1, Vec::new()).unwrap();
        for (i, frame) in frames.iter().enumerate() {
            let _ = decode::<Request>(frame);
            let _ = decode_id_prefix(frame);
            let from = 1 + (i % 2) as u32;
            core.step(
                1_000 + i as u64,
                Input::Peer {
                    from,
                    msg: PeerMsg::Protocol(Bytes(frame.clone())),
                },
            );
            core.step(1_000 + i as u64, Input::Tick);
        }
    }
});
