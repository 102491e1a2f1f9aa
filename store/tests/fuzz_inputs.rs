//! Inputs the `store_frames` fuzz target found crashing (in
//! `tests/fuzz_regressions/`), replayed the way the target feeds them: as
//! frames on a peer port, to a core of every mode.

use splitbrain_store::codec::{decode, decode_id_prefix, read_frame};
use splitbrain_store::config::Mode;
use splitbrain_store::core::{build_core, Bytes, Input, PeerMsg};
use splitbrain_store::msg::Request;
use splitbrain_store::sim::Sim;

#[tokio::test]
async fn every_input_the_fuzzer_found_is_taken_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let mut input = &data[..];
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = read_frame(&mut input, 1 << 16).await {
            frames.push(frame);
        }
        assert!(!frames.is_empty());
        for mode in [Mode::SingleLeader, Mode::Leaderless] {
            let mut cfg = Sim::cluster(3);
            cfg.mode = mode;
            let mut core = build_core(&cfg, 0, 1, Vec::new()).unwrap();
            for (i, frame) in frames.iter().enumerate() {
                let _ = decode::<Request>(frame);
                let _ = decode_id_prefix(frame);
                let from = 1 + (i % 2) as u32;
                let msg = PeerMsg::Protocol(Bytes(frame.clone()));
                core.step(1_000 + i as u64, Input::Peer { from, msg });
                core.step(1_000 + i as u64, Input::Tick);
            }
        }
        seen += 1;
    }
    assert!(seen > 0);
}
