//! Inputs the `store_frames` fuzz target found crashing (in
//! `tests/fuzz_regressions/`), replayed the way the target feeds them.

#[tokio::test]
async fn every_input_the_fuzzer_found_is_taken_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        splitbrain_store::sim::feed_peer_bytes(&data).await;
        seen += 1;
    }
    assert!(seen >= 2);
}
