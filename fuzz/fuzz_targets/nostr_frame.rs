//! Fuzzes the NIP-01 frame parsers: any bytes, as a client frame and as a relay frame.
//!
//! Both parsers must return (never panic, never run away) on every input; the seed corpus in
//! `fuzz/corpus/nostr_frame/` is replayed by a normal `cargo test` through exactly these calls.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hypergate_core::nostr::ClientMessage::parse(
            text,
            &hypergate_core::nostr::Limits::default(),
        );
        let _ = hypergate_core::nostr::RelayMessage::parse(text);
    }
});
