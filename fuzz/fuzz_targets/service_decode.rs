//! Fuzzes the network-facing parsers: the escrow API's request bodies (deposit, unlock, revoke,
//! renew, release) and the peer link's identity proof, handshake responder, record stream and
//! sealed stream; the first byte picks the parser and none may panic. Seeds:
//! `fuzz/corpus/service_decode/` (written by the ignored `write_service_decode_seeds` test in
//! `hypergate-tests`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hypergate_tests::decoders::check_service_input(data);
});
