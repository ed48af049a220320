//! DKIM signatures checked by an independent verifier: Python's dkimpy, through
//! `tests/data/dkim/verify.py`, which answers the key lookup with the record
//! [`DkimKey::dns_record`] gives instead of asking DNS.
//!
//! Needs python3 with dkimpy and PyNaCl: `scripts/python-tools.sh` installs them. When
//! they are missing these tests fail (they do not skip) and say so.

use maily_engine::domain::{
    address::EmailAddress,
    ids::{CampaignId, MessageId, TenantId},
};
use maily_engine::message::{Envelope, MessageLinks, build_with};
use maily_engine::template::Rendered;
use maily_engine::time::Timestamp;
use maily_engine::tracking::{TokenKey, TokenKeys, Tracking};
use maily_smtp::{DkimAlgorithm, DkimKey, DkimSigner};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dkim")
        .join(name)
}

/// A campaign message as the sender builds it: multipart text + HTML with non-ASCII in
/// the display name, subject and both bodies, long quoted-printable lines, tracked
/// links, a folded `List-Unsubscribe` (https and mailto), `List-Unsubscribe-Post` and
/// `Feedback-ID`.
fn campaign_message() -> Vec<u8> {
    let from = EmailAddress::parse("news@shop.example").unwrap();
    let to = EmailAddress::parse("zoe@example.com").unwrap();
    let text = format!(
        "Bonjour Zoë,\n\nLes soldes d'été commencent : -30 % sur tout le rayon « café ».\n{}\n\
         Grüße aus Köln — 東京でも。\n\n-- \nBoutique Élodie\n",
        "Une très longue ligne pour forcer le découpage quoted-printable. ".repeat(4)
    );
    let html = format!(
        "<html><body><p>Bonjour Zoë,</p><p>Les soldes d'été commencent&nbsp;: \
         <b>-30&nbsp;%</b> sur le rayon «&nbsp;<a href=\"https://shop.example/caf%C3%A9?x=1&amp;y=2\">café</a>&nbsp;».</p><p>{}</p>\
         <p>Grüße aus Köln — 東京でも。</p></body></html>\n",
        "Texte de remplissage accentué, répété. ".repeat(6)
    );
    let tenant = TenantId::parse("acme").unwrap();
    let keys = TokenKeys::new(TokenKey::new(1, [7u8; 32]).unwrap(), vec![]).unwrap();
    let tracking = Tracking::new("https://t.shop.example", keys).unwrap();
    let mailto = EmailAddress::parse("unsubscribe@shop.example").unwrap();
    let message = build_with(
        &Envelope {
            message_id: MessageId::new(),
            campaign: CampaignId::new(),
            from: &from,
            from_name: Some("Boutique Élodie"),
            to: &to,
            date: Timestamp(1_795_000_000_000),
        },
        &Rendered {
            subject: "Soldes d'été — 30 % de réduction ☀".into(),
            text: Some(text),
            html: Some(html),
        },
        Some(&MessageLinks {
            tenant: &tenant,
            tracking: Some(&tracking),
            unsubscribe_mailto: Some(&mailto),
        }),
    );
    let text = String::from_utf8_lossy(&message);
    for expected in [
        "multipart/alternative",
        "List-Unsubscribe: <https://",
        ">,\r\n <mailto:",
        "List-Unsubscribe-Post: ",
        "Feedback-ID: ",
        "https://t.shop.example/",
    ] {
        assert!(
            text.contains(expected),
            "the fixture lacks {expected:?}:\n{text}"
        );
    }
    message
}

/// What dkimpy said about a message.
struct Verdict {
    pass: bool,
    stderr: String,
}

/// Runs dkimpy on `message`, with `key`'s public record published at its DNS name.
fn dkimpy(message: &[u8], key: &DkimKey) -> Verdict {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = fixture("verify.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .env("DKIM_NAME", key.dns_name())
        .env("DKIM_TXT", key.dns_record())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {python} ({e}); the DKIM tests need Python 3 with dkimpy and \
                 PyNaCl: run scripts/python-tools.sh"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(message)
        .expect("write the message to the verifier");
    let output = child.wait_with_output().expect("wait for the verifier");
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match (output.status.code(), stdout.as_str()) {
        (Some(0), "pass") => Verdict { pass: true, stderr },
        (Some(1), "fail") => Verdict {
            pass: false,
            stderr,
        },
        (Some(3), _) => panic!(
            "dkimpy or PyNaCl is missing for {python}: run scripts/python-tools.sh\n{stderr}"
        ),
        (status, _) => panic!(
            "the dkimpy verifier {} failed (status {status:?}, stdout {stdout:?}); \
             run scripts/python-tools.sh if a module is missing\n{stderr}",
            script.display()
        ),
    }
}

/// The DKIM-Signature header of a signed message, unfolded.
fn signature_header(signed: &[u8]) -> String {
    let text = String::from_utf8_lossy(signed);
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    let end = text.find("\r\n").unwrap();
    let mut header = text[..end].to_string();
    let mut rest = &text[end + 2..];
    while rest.starts_with([' ', '\t']) {
        let end = rest.find("\r\n").unwrap();
        header.push_str(&rest[..end]);
        rest = &rest[end + 2..];
    }
    header
}

fn tag<'a>(header: &'a str, name: &str) -> &'a str {
    header
        .trim_start_matches("DKIM-Signature:")
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {header}"))
}

/// Changes the first occurrence of `from` after the headers into `to` (same length).
fn tamper_body(signed: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let body_start = signed.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let at = body_start
        + signed[body_start..]
            .windows(from.len())
            .position(|w| w == from)
            .unwrap();
    let mut out = signed.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

fn check_key(file: &str, selector: &str, algorithm: DkimAlgorithm, a: &str) {
    let key = DkimKey::from_file("shop.example", selector, fixture(file)).unwrap();
    assert_eq!(key.algorithm(), algorithm);
    let record = key.dns_record();
    let name = key.dns_name();
    let mut signer = DkimSigner::new();
    signer.add_key(key).unwrap();
    let key = signer.key_for("shop.example").unwrap();

    let message = campaign_message();
    // The From domain is matched without regard to case.
    let signed = signer.sign("Shop.Example", &message).unwrap().unwrap();
    assert!(
        signed.ends_with(&message),
        "the message follows the header untouched"
    );

    let header = signature_header(&signed);
    assert_eq!(tag(&header, "a"), a, "{header}");
    assert_eq!(tag(&header, "d"), "shop.example");
    assert_eq!(tag(&header, "s"), selector);
    assert_eq!(tag(&header, "c"), "relaxed/relaxed");
    let mut h: Vec<String> = tag(&header, "h")
        .split(':')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    assert_eq!(
        h.iter().filter(|n| *n == "from").count(),
        2,
        "From is oversigned: {header}"
    );
    h.sort();
    h.dedup();
    assert_eq!(
        h,
        [
            "content-type",
            "date",
            "feedback-id",
            "from",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "message-id",
            "mime-version",
            "subject",
            "to",
        ],
        "only the present headers of the list (no X-Maily-*): {header}"
    );

    let verdict = dkimpy(&signed, key);
    assert!(
        verdict.pass,
        "dkimpy rejected a {algorithm} signature\nrecord {name} TXT {record}\n{header}\n{}",
        verdict.stderr
    );

    // One byte of the body changed after signing: the body hash no longer matches.
    let tampered = tamper_body(&signed, b"Bonjour", b"Bonjous");
    let verdict = dkimpy(&tampered, key);
    assert!(
        !verdict.pass,
        "dkimpy accepted a tampered body ({algorithm})"
    );
    assert!(
        verdict.stderr.contains("body hash mismatch"),
        "{}",
        verdict.stderr
    );

    // A signed header changed: the signature no longer verifies.
    let text = String::from_utf8(signed.clone()).unwrap();
    let tampered = text.replacen("To: <zoe@example.com>", "To: <zoe@example.org>", 1);
    assert_ne!(tampered, text);
    assert!(
        !dkimpy(tampered.as_bytes(), key).pass,
        "dkimpy accepted a changed To ({algorithm})"
    );

    // A second From header added in transit: the oversigned From catches it.
    let header_end = text.find("\r\nFrom: ").unwrap() + 2;
    let mut forged = text.clone();
    forged.insert_str(header_end, "From: <ceo@shop.example>\r\n");
    assert!(
        !dkimpy(forged.as_bytes(), key).pass,
        "dkimpy accepted an added From ({algorithm})"
    );

    // Unsigned headers may be added (as relays do) without breaking it.
    let relayed = format!(
        "Received: from relay.example by mx.example.com; Wed, 18 Nov 2026 11:06:41 +0000\r\n{text}"
    );
    let verdict = dkimpy(relayed.as_bytes(), key);
    assert!(
        verdict.pass,
        "an added Received: header broke it\n{}",
        verdict.stderr
    );
}

#[test]
fn ed25519_signature_verifies_with_dkimpy() {
    check_key(
        "ed25519.pem",
        "ed1",
        DkimAlgorithm::Ed25519,
        "ed25519-sha256",
    );
}

#[test]
fn rsa2048_pkcs8_signature_verifies_with_dkimpy() {
    check_key("rsa2048.pem", "rsa1", DkimAlgorithm::Rsa2048, "rsa-sha256");
}

#[test]
fn rsa2048_pkcs1_signature_verifies_with_dkimpy() {
    check_key(
        "rsa2048-pkcs1.pem",
        "rsa2",
        DkimAlgorithm::Rsa2048,
        "rsa-sha256",
    );
}

#[test]
fn fallback_key_signs_other_domains_with_its_own_d() {
    let mut signer = DkimSigner::new();
    signer
        .add_key(DkimKey::from_file("shop.example", "ed1", fixture("ed25519.pem")).unwrap())
        .unwrap();
    assert!(
        signer
            .sign("other.example", &campaign_message())
            .unwrap()
            .is_none(),
        "no key for the domain and no fallback: unsigned"
    );

    signer.set_fallback(DkimKey::from_file("maily.example", "fb", fixture("rsa2048.pem")).unwrap());
    let message = campaign_message();
    let signed = signer.sign("other.example", &message).unwrap().unwrap();
    let header = signature_header(&signed);
    assert_eq!(tag(&header, "d"), "maily.example");
    assert_eq!(tag(&header, "s"), "fb");
    let key = signer.key_for("other.example").unwrap();
    let verdict = dkimpy(&signed, key);
    assert!(verdict.pass, "{header}\n{}", verdict.stderr);
}

#[test]
fn signer_is_shared_across_threads() {
    let mut signer = DkimSigner::new();
    signer
        .add_key(DkimKey::from_file("shop.example", "ed1", fixture("ed25519.pem")).unwrap())
        .unwrap();
    let signer = Arc::new(signer);
    let message = Arc::new(campaign_message());
    let signed: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let (signer, message) = (Arc::clone(&signer), Arc::clone(&message));
            std::thread::spawn(move || signer.sign("shop.example", &message).unwrap().unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let key = signer.key_for("shop.example").unwrap();
    for s in &signed {
        assert!(s.ends_with(&message));
    }
    assert!(dkimpy(&signed[3], key).pass);
}
