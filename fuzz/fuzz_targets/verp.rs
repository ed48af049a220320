//! VERP decoding of arbitrary addresses; whatever decodes must re-encode (when it fits)
//! to an address that decodes to the same tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maily_engine::Domain;
use maily_engine::verp::VerpCodec;
use std::sync::OnceLock;

fn codec() -> &'static VerpCodec {
    static CODEC: OnceLock<VerpCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let domain = Domain::parse("bounce.maily.example").expect("valid domain");
        VerpCodec::new("b", domain, b"maily-test-verp-key-0123456789ab".to_vec())
            .expect("valid codec")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tag) = codec().decode(text)
        && let Ok(again) = codec().encode(&tag)
    {
        assert_eq!(codec().decode(again.as_str()).as_ref(), Ok(&tag));
    }
});
