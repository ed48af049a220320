//! The bounce analyser on inputs no mail system should send: malformed, truncated,
//! huge, binary, deeply nested. Each must come back as an error or as something
//! that is not a bounce (or, when what remains is still a readable report, as a
//! bounce): never a panic.

use maily_bounce::report::{MAX_INPUT, MessageKind, ReportError, analyse, mbox_messages};
use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bounces/eml");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect()
}

#[test]
fn empty_and_oversized_inputs_are_errors() {
    assert_eq!(analyse(b""), Err(ReportError::Empty));
    let huge = vec![b'a'; MAX_INPUT + 1];
    assert!(matches!(
        analyse(&huge),
        Err(ReportError::TooLarge { size, limit }) if size == MAX_INPUT + 1 && limit == MAX_INPUT
    ));
}

#[test]
fn binary_is_not_a_message() {
    let mut noise = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        // xorshift: deterministic bytes of every value, NULs included.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    for input in [&noise[..], b"\0\0\0\0", b"\xff\xfe\xfd", b"\n\n\n"] {
        match analyse(input) {
            Err(_) => {}
            Ok(a) => assert_ne!(a.kind, MessageKind::Bounce, "{:?}", a.findings),
        }
    }
    // Headers followed by binary: a message, but not a bounce.
    let mut with_headers = b"From: a@b.example\r\nSubject: x\r\n\r\n".to_vec();
    with_headers.extend_from_slice(&noise);
    let a = analyse(&with_headers).expect("a message");
    assert_eq!(a.kind, MessageKind::Other);
}

#[test]
fn a_ten_megabyte_bounce_is_read_within_the_limits() {
    // A real bounce padded to just under the input limit: the padding goes in its
    // text part, after the report.
    let dsn = include_str!("data/bounces/eml/lhost-postfix-01.eml");
    let mut big = dsn.replace(
        "--FFFFFFFFFFFF.0000000000000/p351355.pool.example.ne.jp--",
        "",
    );
    let filler = "this line repeats to pad the message to the limit.\n";
    while big.len() + filler.len() < MAX_INPUT - 200 {
        big.push_str(filler);
    }
    assert!(big.len() <= MAX_INPUT);
    let a = analyse(big.as_bytes()).expect("under the limit");
    assert_eq!(a.kind, MessageKind::Bounce);
    for f in &a.findings {
        assert!(f.diagnostic.len() <= maily_bounce::report::MAX_DIAGNOSTIC_LEN);
    }
    // Huge single lines and many short lines.
    let long_line = format!(
        "From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n<a@b.example>:\n{}\n",
        "x".repeat(MAX_INPUT - 100)
    );
    let _ = analyse(long_line.as_bytes());
    let many_lines = format!(
        "From: MAILER-DAEMON@x.example\n\n{}",
        "<a@b.example>:\n550 no\n".repeat(MAX_INPUT / 24)
    );
    let a = analyse(many_lines.as_bytes()).expect("a message");
    assert!(a.findings.len() <= 1, "one recipient named many times");
}

#[test]
fn every_corpus_message_truncated_anywhere_is_handled() {
    for raw in corpus() {
        let step = (raw.len() / 23).max(1);
        let mut cut = 0;
        while cut < raw.len() {
            // Cut at a byte, possibly inside a UTF-8 sequence or a CRLF.
            let _ = analyse(&raw[..cut]);
            cut += step;
        }
    }
}

#[test]
fn corrupted_corpus_messages_are_handled() {
    for (n, raw) in corpus().into_iter().enumerate() {
        let mut bad = raw.clone();
        // Flip bytes through the message, deterministically per file.
        let mut i = n % 7;
        while i < bad.len() {
            bad[i] ^= 0x5a;
            i += 97;
        }
        let _ = analyse(&bad);
        // Boundaries and headers broken: every "--" becomes "-=", every colon a space.
        let text = String::from_utf8_lossy(&raw);
        let _ = analyse(text.replace("--", "-=").as_bytes());
        let _ = analyse(text.replace(':', " ").as_bytes());
        // Nothing but its header section.
        if let Some(end) = text.find("\n\n") {
            let _ = analyse(text[..end].as_bytes());
        }
    }
}

#[test]
fn deep_nesting_and_many_parts_stay_bounded() {
    let bounce = include_str!("data/bounces/eml/lhost-sendmail-01.eml");
    let mut nested = bounce.to_string();
    for _ in 0..64 {
        nested = format!("Content-Type: message/rfc822\n\n{nested}");
    }
    let _ = analyse(nested.as_bytes());
    let mut parts = String::from(
        "From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b\n\n",
    );
    for i in 0..10_000 {
        parts.push_str(&format!(
            "--b\nContent-Type: text/plain\n\n<r{i}@b.example>: 550 5.1.1 user unknown\n"
        ));
    }
    parts.push_str("--b--\n");
    let _ = analyse(parts.as_bytes());
    let mut multiparts = String::from("Content-Type: multipart/mixed; boundary=a\n\n");
    for depth in 0..200 {
        multiparts.push_str(&format!(
            "--a\nContent-Type: multipart/mixed; boundary=a{depth}\n\n"
        ));
    }
    let _ = analyse(multiparts.as_bytes());
}

#[test]
fn reports_with_thousands_of_recipients_are_capped() {
    let mut dsn = String::from(
        "From: MAILER-DAEMON@x.example\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x.example\n\n",
    );
    for i in 0..5_000 {
        dsn.push_str(&format!(
            "Final-Recipient: rfc822; r{i}@b.example\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 unknown\n\n"
        ));
    }
    dsn.push_str("--b--\n");
    let a = analyse(dsn.as_bytes()).expect("a report");
    assert_eq!(a.kind, MessageKind::Bounce);
    assert!(a.findings.len() <= maily_bounce::report::MAX_RECIPIENTS);
}

#[test]
fn mailboxes_split_even_when_malformed() {
    for raw in corpus() {
        let mut doubled = raw.clone();
        doubled.extend_from_slice(b"\nFrom MAILER-DAEMON  Thu Apr 29 23:34:45 2015\n");
        doubled.extend_from_slice(&raw);
        let messages = mbox_messages(&doubled);
        assert!(messages.len() >= 2);
        for m in messages {
            let _ = analyse(m);
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
        let _ = analyse(&bytes);
    }

    #[test]
    fn arbitrary_text_in_a_report_never_panics(
        fields in "\\PC{0,400}",
        text in "\\PC{0,400}",
    ) {
        let raw = format!(
            "From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n{text}\n--b\nContent-Type: message/delivery-status\n\n{fields}\n--b--\n"
        );
        let _ = analyse(raw.as_bytes());
    }
}
