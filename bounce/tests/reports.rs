//! The report corpus (`tests/data/reports/`): every report parses to what
//! `expected.json` says, and every file in `malformed/` is refused with a reason.

use maily_bounce::report::{Dsn, DsnRecipient, Report, parse_report};
use maily_engine::verp::VerpCodec;
use maily_engine::{Domain, EmailAddress};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reports")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// The report files in `dir` (everything but the JSON and the README).
fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".json") && !n.ends_with(".md"))
        .collect()
}

fn listed(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_object()
        .unwrap_or_else(|| panic!("expected.json has no {key:?} object"))
        .keys()
        .cloned()
        .collect()
}

/// Compares an optional string with an expectation: absent key = not checked, null =
/// must be absent, string = must be equal.
fn check_opt(file: &str, what: &str, exp: &Map<String, Value>, key: &str, actual: Option<&str>) {
    match exp.get(key) {
        None => {}
        Some(Value::Null) => assert_eq!(actual, None, "{file}: {what} {key}"),
        Some(Value::String(s)) => assert_eq!(actual, Some(s.as_str()), "{file}: {what} {key}"),
        Some(other) => panic!("{file}: {key} must be a string or null, not {other}"),
    }
}

fn check_strings(file: &str, exp: &Map<String, Value>, key: &str, actual: &[String]) {
    if let Some(v) = exp.get(key) {
        let want: Vec<&str> = v
            .as_array()
            .unwrap_or_else(|| panic!("{file}: {key} must be an array"))
            .iter()
            .map(|s| s.as_str().expect("strings"))
            .collect();
        assert_eq!(actual, want.as_slice(), "{file}: {key}");
    }
}

fn check_recipient(file: &str, i: usize, exp: &Map<String, Value>, r: &DsnRecipient) {
    let what = format!("recipient {i}");
    let diag = r.diagnostic_code.as_ref();
    let reply = diag.and_then(|d| d.reply.as_ref());
    let status = r.status.to_string();
    let enhanced = reply.and_then(|r| r.enhanced).map(|e| e.to_string());
    let code = reply.map(|r| r.code.to_string());
    check_opt(
        file,
        &what,
        exp,
        "final_recipient",
        Some(&r.final_recipient),
    );
    check_opt(
        file,
        &what,
        exp,
        "original_recipient",
        r.original_recipient.as_deref(),
    );
    check_opt(file, &what, exp, "action", Some(r.action.as_str()));
    check_opt(file, &what, exp, "status", Some(&status));
    check_opt(file, &what, exp, "remote_mta", r.remote_mta.as_deref());
    check_opt(
        file,
        &what,
        exp,
        "diagnostic_kind",
        diag.and_then(|d| d.kind.as_deref()),
    );
    check_opt(file, &what, exp, "reply_enhanced", enhanced.as_deref());
    check_opt(
        file,
        &what,
        exp,
        "reply_text",
        reply.map(|r| r.text.as_str()),
    );
    check_opt(
        file,
        &what,
        exp,
        "last_attempt_date",
        r.last_attempt_date.as_deref(),
    );
    check_opt(
        file,
        &what,
        exp,
        "will_retry_until",
        r.will_retry_until.as_deref(),
    );
    match exp.get("reply_code") {
        None => {}
        Some(Value::Null) => assert_eq!(code, None, "{file}: {what} reply_code"),
        Some(v) => assert_eq!(code, Some(v.to_string()), "{file}: {what} reply_code"),
    }
    if let Some(needle) = exp.get("diagnostic_contains").and_then(Value::as_str) {
        let text = diag.map(|d| d.text.as_str()).unwrap_or("");
        assert!(text.contains(needle), "{file}: {what} diagnostic {text:?}");
    }
    // Every recipient yields a verdict and an address where the address is plain.
    let _ = r.classify();
    assert!(r.address().is_ok(), "{file}: {what} address");
}

fn check_dsn(file: &str, exp: &Map<String, Value>, d: &Dsn) {
    check_opt(
        file,
        "dsn",
        exp,
        "reporting_mta",
        d.reporting_mta.as_deref(),
    );
    check_opt(file, "dsn", exp, "arrival_date", d.arrival_date.as_deref());
    check_opt(
        file,
        "dsn",
        exp,
        "original_envelope_id",
        d.original_envelope_id.as_deref(),
    );
    let want = exp
        .get("recipients")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{file}: a DSN lists its recipients"));
    assert_eq!(d.recipients.len(), want.len(), "{file}: recipient count");
    for (i, (w, r)) in want.iter().zip(&d.recipients).enumerate() {
        check_recipient(file, i + 1, w.as_object().expect("recipient object"), r);
    }
    if let Some(fields) = exp.get("message_fields").and_then(Value::as_object) {
        for (name, value) in fields {
            assert_eq!(d.message_fields.get(name), value.as_str(), "{file}: {name}");
        }
    }
}

fn check_report(file: &str, exp: &Map<String, Value>, codec: &VerpCodec, report: &Report) {
    let kind = match report {
        Report::Dsn(_) => "dsn",
        Report::Complaint(_) => "complaint",
    };
    assert_eq!(Some(kind), exp["kind"].as_str(), "{file}: kind");
    match report {
        Report::Dsn(d) => check_dsn(file, exp, d),
        Report::Complaint(a) => {
            let what = "complaint";
            let ip = a.source_ip.map(|ip| ip.to_string());
            check_opt(
                file,
                what,
                exp,
                "feedback_type",
                Some(a.feedback_type.as_str()),
            );
            check_opt(file, what, exp, "user_agent", a.user_agent.as_deref());
            check_opt(file, what, exp, "version", a.version.as_deref());
            check_opt(
                file,
                what,
                exp,
                "original_mail_from",
                a.original_mail_from.as_deref(),
            );
            check_opt(file, what, exp, "arrival_date", a.arrival_date.as_deref());
            check_opt(file, what, exp, "source_ip", ip.as_deref());
            check_strings(file, exp, "original_rcpt_to", &a.original_rcpt_to);
            check_strings(file, exp, "reported_domain", &a.reported_domain);
        }
    }
    check_opt(
        file,
        "report",
        exp,
        "envelope_recipient",
        report.envelope_recipient(),
    );
    let mid = report.original_message_id().map(|m| m.to_string());
    check_opt(file, "report", exp, "original_message_id", mid.as_deref());
    let campaign = report.original_campaign().map(|c| c.to_string());
    check_opt(
        file,
        "report",
        exp,
        "original_campaign",
        campaign.as_deref(),
    );
    if let Some(headers) = exp.get("original_headers").and_then(Value::as_object) {
        for (name, value) in headers {
            assert_eq!(
                report.original_header(name),
                value.as_str(),
                "{file}: original {name}"
            );
        }
    }
    let verp = report
        .verp_candidates()
        .into_iter()
        .find_map(|a| codec.decode(a).ok());
    match exp.get("verp") {
        None => assert!(verp.is_none(), "{file}: unexpected VERP {verp:?}"),
        Some(v) => {
            let tag = verp.unwrap_or_else(|| {
                panic!(
                    "{file}: no candidate decodes: {:?}",
                    report.verp_candidates()
                )
            });
            assert_eq!(Some(tag.tenant.as_str()), v["tenant"].as_str(), "{file}");
            assert_eq!(
                Some(tag.campaign.to_string().as_str()),
                v["campaign"].as_str()
            );
            assert_eq!(
                Some(tag.message_id.to_string().as_str()),
                v["message_id"].as_str()
            );
            assert_eq!(
                Some(tag.recipient.as_str()),
                v["recipient"].as_str(),
                "{file}"
            );
        }
    }
    // The report survives a serde round trip (it may travel on a topic).
    let json = serde_json::to_string(report).expect("serializes");
    let back: Report = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(&back, report, "{file}: serde round trip");
}

fn test_codec(v: &Value) -> VerpCodec {
    let t = &v["test_verp"];
    VerpCodec::new(
        t["prefix"].as_str().expect("prefix"),
        Domain::parse(t["domain"].as_str().expect("domain")).expect("domain"),
        t["key"].as_str().expect("key").as_bytes().to_vec(),
    )
    .expect("codec")
}

#[test]
fn every_report_parses_as_expected() {
    let exp = expected();
    let codec = test_codec(&exp);
    let dir = data_dir();
    let files = files_in(&dir);
    assert_eq!(
        files,
        listed(&exp, "reports"),
        "files and expected.json differ"
    );
    assert!(files.len() >= 12, "the corpus has at least 12 reports");
    for file in &files {
        let raw = std::fs::read(dir.join(file)).expect("readable");
        let report = parse_report(&raw).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want = exp["reports"][file.as_str()]
            .as_object()
            .expect("an object per report");
        check_report(file, want, &codec, &report);
        // Line endings do not matter.
        let flipped = if raw.windows(2).any(|w| w == b"\r\n") {
            String::from_utf8_lossy(&raw).replace("\r\n", "\n")
        } else {
            String::from_utf8_lossy(&raw).replace('\n', "\r\n")
        };
        let again = parse_report(flipped.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            again.recipients(),
            report.recipients(),
            "{file}: line endings"
        );
    }
}

#[test]
fn every_malformed_file_is_refused_with_a_reason() {
    let exp = expected();
    let dir = data_dir().join("malformed");
    let files = files_in(&dir);
    assert_eq!(
        files,
        listed(&exp, "malformed"),
        "files and expected.json differ"
    );
    for file in &files {
        let raw = std::fs::read(dir.join(file)).expect("readable");
        let err = match parse_report(&raw) {
            Ok(r) => panic!("malformed/{file} parsed: {r:?}"),
            Err(e) => e.to_string(),
        };
        println!("malformed/{file}: {err}");
        let want = exp["malformed"][file.as_str()].as_str().expect("a reason");
        assert!(
            err.contains(want),
            "malformed/{file}: {err:?} lacks {want:?}"
        );
    }
}

#[test]
fn every_prefix_of_every_report_is_handled() {
    // Cutting a report anywhere never panics, and a cut inside the machine-readable
    // part is refused rather than read as a shorter report.
    let dir = data_dir();
    for file in files_in(&dir) {
        let raw = std::fs::read(dir.join(&file)).expect("readable");
        for cut in (0..raw.len()).step_by(7) {
            let _ = parse_report(&raw[..cut]);
        }
    }
}

#[test]
fn recipients_are_addresses() {
    let raw = std::fs::read(data_dir().join("sendmail-two-recipients.eml")).expect("readable");
    let report = parse_report(&raw).expect("parses");
    let want: Vec<EmailAddress> = ["first@example.com", "second@example.com"]
        .iter()
        .map(|a| EmailAddress::parse(a).expect("address"))
        .collect();
    assert_eq!(report.recipients(), want);
}
