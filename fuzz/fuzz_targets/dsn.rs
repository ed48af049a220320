//! `parse_report` on raw messages, and on delivery-status fields inside a valid envelope.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::exercise(data);
    common::exercise(&common::envelope(
        "delivery-status",
        "message/delivery-status",
        data,
    ));
});
