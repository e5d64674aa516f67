//! Fuzzes the storage decoders (relay log ops, hypercore proofs, sealed envelopes, drive
//! metadata blocks, relay index records): the first byte picks the decoder; none may panic and
//! every accepted input must round-trip. Seeds: `fuzz/corpus/storage_decode/` (written by the
//! ignored `write_storage_decode_seeds` test in `hypergate-tests`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hypergate_tests::decoders::check_storage_input(data);
});
