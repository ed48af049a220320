//! SMTP reply parsing and classification (`engine::bounce`) on arbitrary reply lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maily_bounce::classify_reply;
use maily_engine::reply::{EnhancedStatus, SmtpReply};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .take(64)
        .collect();
    if let Ok(reply) = SmtpReply::parse_lines(&lines) {
        assert!((200..600).contains(&reply.code));
        let _ = classify_reply(&reply);
        let _ = reply.to_string();
    }
    // Classification is regex work; a few lines per input keep the fuzzer fast.
    for line in lines.iter().take(8) {
        if let Some(status) = EnhancedStatus::parse(line) {
            assert_eq!(EnhancedStatus::parse(&status.to_string()), Some(status));
        }
        let reply = SmtpReply::new(550, *line);
        let _ = classify_reply(&reply);
    }
});
