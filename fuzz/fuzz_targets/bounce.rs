//! `report::analyse` on raw messages (whole, and split as an mbox), and on the input as
//! the text of a bounce from a mailer daemon, so the plain-text format parsers see it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maily_bounce::report::{
    MAX_DIAGNOSTIC_LEN, MAX_RECIPIENTS, MessageKind, analyse, mbox_messages,
};

/// Analyses `raw` and runs every accessor the inbound path uses on the result.
fn exercise(raw: &[u8]) {
    let Ok(analysis) = analyse(raw) else {
        return;
    };
    let _ = analysis.original_message_id();
    let _ = analysis.engine_message_id();
    let _ = analysis.engine_campaign();
    let _ = analysis.verp_candidates();
    let _ = analysis.original_header("x-mailer");
    match analysis.kind {
        MessageKind::Bounce | MessageKind::Delivered => {
            assert!(!analysis.findings.is_empty(), "a report names a recipient")
        }
        MessageKind::Other => assert!(analysis.findings.is_empty()),
        MessageKind::Complaint | MessageKind::AutoReply => {}
    }
    assert!(analysis.findings.len() <= MAX_RECIPIENTS);
    for f in &analysis.findings {
        assert!(f.diagnostic.len() <= MAX_DIAGNOSTIC_LEN);
        let _ = f.address();
        let _ = (
            f.is_hard(),
            f.reason.category(),
            f.status.map(|s| s.to_string()),
        );
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    let messages = mbox_messages(data);
    if messages.len() > 1 {
        for message in messages {
            exercise(message);
        }
    }
    let mut bounce = b"From: Mail Delivery System <MAILER-DAEMON@fuzz.example>\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\r\n"
        .to_vec();
    bounce.extend_from_slice(data);
    exercise(&bounce);
});
