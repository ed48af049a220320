//! The bounce analyser against real-world reports (`tests/data/bounces/`, Sisimai's
//! "set-of-emails" and the expectations of Sisimai's own test suite).
//!
//! Every message under `eml/` is analysed and compared with `expected.tsv` recipient by
//! recipient, in the order the report names them. The test prints the agreement per
//! reason and every disagreement, and fails below [`THRESHOLD`] agreement on reason,
//! status or hard bounce. Messages under `not-bounces/` must not come out as bounces.

use maily_bounce::report::{Analysis, Finding, MessageKind, analyse, mbox_messages};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Least share of recipients that must agree with Sisimai, per field.
const THRESHOLD: f64 = 0.95;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bounces")
}

/// One line of `expected.tsv`.
#[derive(Debug)]
struct Expected {
    file: String,
    index: usize,
    status: String,
    reason: String,
    hard: bool,
    feedback_type: String,
}

fn expectations() -> BTreeMap<String, Vec<Expected>> {
    let text = std::fs::read_to_string(data_dir().join("expected.tsv")).expect("expected.tsv");
    let mut by_file: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 6, "expected.tsv line {}: {line:?}", n + 1);
        let e = Expected {
            file: cols[0].to_string(),
            index: cols[1].parse().expect("index"),
            status: cols[2].to_string(),
            reason: cols[4].to_string(),
            hard: cols[5] == "true",
            feedback_type: cols.get(6).copied().unwrap_or("").to_string(),
        };
        by_file.entry(e.file.clone()).or_default().push(e);
    }
    by_file
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Agreement counts for one field.
#[derive(Default, Clone, Copy)]
struct Score {
    agree: usize,
    total: usize,
}

impl Score {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.agree += usize::from(ok);
    }

    fn share(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.agree as f64 / self.total as f64
        }
    }
}

fn status_of(f: &Finding) -> String {
    f.status.map(|s| s.to_string()).unwrap_or_default()
}

#[test]
fn agrees_with_sisimai_on_the_corpus() {
    let expected = expectations();
    let (mut reason, mut status, mut hard) = (Score::default(), Score::default(), Score::default());
    let mut per_reason: BTreeMap<String, Score> = BTreeMap::new();
    let mut disagreements = String::new();
    let eml = files_in(&data_dir().join("eml"));
    assert_eq!(eml.len(), 453, "the corpus has 453 messages");
    for path in &eml {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(path).expect("readable");
        // A few files are mailboxes of more than one report.
        let mut findings = Vec::new();
        for message in mbox_messages(&raw) {
            match analyse(message) {
                Ok(Analysis { findings: f, .. }) => findings.extend(f),
                Err(e) => {
                    let _ = writeln!(disagreements, "{file}: not analysed: {e}");
                }
            }
        }
        let want = expected.get(&file).map(Vec::as_slice).unwrap_or(&[]);
        for (i, e) in want.iter().enumerate() {
            let got = findings.get(i);
            let got_reason = got.map_or("-".to_string(), |f| f.reason.to_string());
            let got_status = got.map_or("-".to_string(), status_of);
            let got_hard = got.is_some_and(Finding::is_hard);
            let ok = (
                got_reason == e.reason,
                got_status == e.status,
                got.is_some() && got_hard == e.hard,
            );
            reason.add(ok.0);
            status.add(ok.1);
            hard.add(ok.2);
            per_reason.entry(e.reason.clone()).or_default().add(ok.0);
            if std::env::var_os("BOUNCE_CORPUS_DUMP").is_some() {
                println!(
                    "ROW\t{file}\t{}\t{}\t{}\t{}\t{got_reason}\t{got_status}\t{}",
                    i + 1,
                    e.reason,
                    e.status,
                    got.map_or(String::new(), |f| format!("{:?}", f.command)),
                    got.map_or(String::new(), |f| f.diagnostic.chars().take(300).collect()),
                );
            }
            if !(ok.0 && ok.1 && ok.2) {
                let _ = writeln!(
                    disagreements,
                    "{file} #{} (row {}): expected {} {} hard={} {}| got {got_reason} {got_status} hard={got_hard} {}| {}",
                    e.index,
                    i + 1,
                    e.reason,
                    if e.status.is_empty() { "-" } else { &e.status },
                    e.hard,
                    if e.feedback_type.is_empty() {
                        String::new()
                    } else {
                        format!("({}) ", e.feedback_type)
                    },
                    got.and_then(|f| f.feedback_type.as_ref())
                        .map_or(String::new(), |t| format!("({}) ", t.as_str())),
                    got.map_or(String::new(), |f| f.diagnostic.chars().take(160).collect()),
                );
            }
        }
        if findings.len() > want.len() {
            let _ = writeln!(
                disagreements,
                "{file}: {} findings beyond the {} expected: {:?}",
                findings.len() - want.len(),
                want.len(),
                findings[want.len()..]
                    .iter()
                    .map(|f| (&f.recipient, f.reason.as_str()))
                    .collect::<Vec<_>>()
            );
        }
    }
    println!("agreement per reason (expected reason: agreeing / recipients):");
    for (name, s) in &per_reason {
        println!(
            "  {name:<16} {:>3} / {:<3} {:>5.1}%",
            s.agree,
            s.total,
            100.0 * s.share()
        );
    }
    println!("disagreements:\n{disagreements}");
    println!(
        "reason {}/{} ({:.1}%), status {}/{} ({:.1}%), hard_bounce {}/{} ({:.1}%)",
        reason.agree,
        reason.total,
        100.0 * reason.share(),
        status.agree,
        status.total,
        100.0 * status.share(),
        hard.agree,
        hard.total,
        100.0 * hard.share(),
    );
    for (name, s) in [
        ("reason", reason),
        ("status", status),
        ("hard_bounce", hard),
    ] {
        assert!(
            s.share() >= THRESHOLD,
            "{name}: {:.1}% agreement, below {:.0}%",
            100.0 * s.share(),
            100.0 * THRESHOLD
        );
    }
}

#[test]
fn messages_that_are_not_bounces_are_not_reported_as_bounces() {
    let files = files_in(&data_dir().join("not-bounces"));
    assert!(!files.is_empty());
    for path in files {
        let raw = std::fs::read(&path).expect("readable");
        if let Ok(a) = analyse(&raw) {
            assert_ne!(
                a.kind,
                MessageKind::Bounce,
                "{}: {:?}",
                path.display(),
                a.findings
            );
            assert!(
                a.findings.iter().all(|f| !f
                    .reason
                    .category()
                    .eq(&maily_engine::reply::Category::BadMailbox)),
                "{}",
                path.display()
            );
        }
    }
}
