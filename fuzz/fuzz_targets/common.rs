//! Shared by the report targets: exercises everything a caller does with a report.

use maily_bounce::report::{Report, parse_report};

/// Parses `raw` and, when it is a report, runs every accessor the bounce actor uses.
pub fn exercise(raw: &[u8]) {
    let Ok(report) = parse_report(raw) else {
        return;
    };
    let _ = report.envelope_recipient();
    let _ = report.verp_candidates();
    let _ = report.original_message_id();
    let _ = report.original_campaign();
    let _ = report.original_header("message-id");
    let _ = report.recipients();
    match &report {
        Report::Dsn(d) => {
            assert!(!d.recipients.is_empty(), "a DSN always has a recipient");
            for r in &d.recipients {
                let _ = r.classify();
                let _ = r.address();
            }
        }
        Report::Complaint(a) => {
            let _ = a.feedback_type.is_complaint();
        }
    }
}

/// Wraps `body` as the machine-readable part of a multipart/report of `report_type`,
/// followed by the returned message, so the fuzzer reaches the field parsers at once.
/// The input is split at the first NUL: before it the report fields, after it the
/// returned message.
pub fn envelope(report_type: &str, part_type: &str, data: &[u8]) -> Vec<u8> {
    let (fields, original) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mut out = Vec::with_capacity(data.len() + 512);
    out.extend_from_slice(
        format!(
            "From: fuzz@example.org\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type={report_type}; boundary=\"=_f\"\r\n\r\n\
             --=_f\r\nContent-Type: text/plain\r\n\r\nreport\r\n\
             --=_f\r\nContent-Type: {part_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(fields);
    out.extend_from_slice(b"\r\n--=_f\r\nContent-Type: message/rfc822\r\n\r\n");
    out.extend_from_slice(original);
    out.extend_from_slice(b"\r\n--=_f--\r\n");
    out
}
