//! Criterion micro-benchmarks of the core's hot paths: the per-message work (render,
//! build, DKIM-sign, classify a reply, pick a partition), the inbound work (analyse a
//! bounce) and the per-epoch Merkle work.
//!
//! Run with `cargo bench -p maily-benches --bench core`; every group reports
//! elements per second, an element being one message, reply, key or tree leaf.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use maily_benches::mail::{build_message, sized_campaign_template};
use maily_benches::{
    sample_campaign_id, sample_campaign_template, sample_leaf_hashes, sample_message_id,
    sample_partition_keys, sample_recipient, sample_replies, sample_sender,
};
use maily_bounce::classify_reply;
use maily_bounce::report::{analyse, mbox_messages};
use maily_engine::Timestamp;
use maily_engine::merkle::MerkleTree;
use maily_engine::message::{self, Envelope};
use maily_engine::partition::partition_for;
use maily_engine::template::{CompiledTemplate, Rendered};
use maily_smtp::{DkimKey, DkimSigner};
use std::hint::black_box;

/// Distinct recipients cycled through, so per-message benchmarks do not measure one
/// input that stays hot in every cache.
const RECIPIENTS: usize = 1_024;

/// The sample campaign's short template, and one whose messages are about 4 KB (the
/// size the end-to-end harness sends).
fn templates() -> [(&'static str, CompiledTemplate); 2] {
    let sized = sized_campaign_template(4096).expect("sizes");
    [("short", sample_campaign_template()), ("4k", sized)]
        .map(|(name, t)| (name, CompiledTemplate::compile(&t).expect("compiles")))
}

fn template(c: &mut Criterion) {
    // Compiling happens once per campaign; only rendering is per message.
    let recipients: Vec<_> = (0..RECIPIENTS).map(sample_recipient).collect();
    let mut group = c.benchmark_group("template");
    group.throughput(Throughput::Elements(1));
    for (name, template) in templates() {
        let mut next = 0;
        group.bench_function(BenchmarkId::new("render", name), |b| {
            b.iter(|| {
                let recipient = &recipients[next % RECIPIENTS];
                next += 1;
                template.render(black_box(recipient)).expect("renders")
            })
        });
    }
    group.finish();
}

fn message(c: &mut Criterion) {
    let recipients: Vec<_> = (0..RECIPIENTS).map(sample_recipient).collect();
    let from = sample_sender();
    let campaign = sample_campaign_id(1);
    let date = Timestamp(1_700_000_000_000);
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    for (name, template) in templates() {
        let parts: Vec<Rendered> = recipients
            .iter()
            .map(|r| template.render(r).expect("renders"))
            .collect();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("build", name), |b| {
            b.iter(|| {
                let i = next % RECIPIENTS;
                next += 1;
                let envelope = Envelope {
                    message_id: sample_message_id(i as u64),
                    campaign,
                    from: &from,
                    from_name: Some("Maily Demo"),
                    to: &recipients[i].email,
                    date,
                };
                message::build(black_box(&envelope), black_box(&parts[i]))
            })
        });
    }
    group.finish();
}

/// The test keys of `smtp/tests/data/dkim` (never published anywhere).
const DKIM_KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../smtp/tests/data/dkim");

fn dkim(c: &mut Criterion) {
    // A built ~4 KB campaign message (multipart/alternative, quoted-printable), the size
    // the end-to-end harness sends; its From domain is maily.example.
    let message = build_message(4096).expect("builds");
    let mut group = c.benchmark_group("dkim");
    group.throughput(Throughput::Elements(1));
    for (name, selector, file) in [
        ("sign_ed25519", "ed1", "ed25519.pem"),
        ("sign_rsa2048", "rsa1", "rsa2048.pem"),
    ] {
        let key = DkimKey::from_file("maily.example", selector, format!("{DKIM_KEYS}/{file}"))
            .expect("test key loads");
        let mut signer = DkimSigner::new();
        signer.add_key(key).expect("one key per domain");
        // What the composer does per message: relaxed/relaxed body hash, header hash,
        // one signature, and the signed copy of the message.
        group.bench_function(name, |b| {
            b.iter(|| {
                signer
                    .sign(black_box("maily.example"), black_box(&message))
                    .expect("signs")
                    .expect("the domain has a key")
            })
        });
    }
    group.finish();
}

/// Real bounces, complaints and auto-replies (Sisimai's corpus, as the engine's tests
/// read it).
const BOUNCE_CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../bounce/tests/data/bounces/eml"
);

/// Every message of the bounce corpus, in file order (mailbox files split).
fn bounce_corpus() -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(BOUNCE_CORPUS)
        .expect("the bounce corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            let raw = std::fs::read(p).expect("readable");
            mbox_messages(&raw)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn bounce(c: &mut Criterion) {
    let replies = sample_replies();
    let mut group = c.benchmark_group("bounce");
    group.throughput(Throughput::Elements(replies.len() as u64));
    group.bench_function("classify_reply", |b| {
        b.iter(|| {
            for reply in &replies {
                black_box(classify_reply(black_box(reply)));
            }
        })
    });
    // What the inbound path does per received report: parse the MIME tree, find the
    // format, read each recipient, classify it. One element is one message.
    let messages = bounce_corpus();
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("analyse_corpus", |b| {
        b.iter(|| {
            for message in &messages {
                let _ = black_box(analyse(black_box(message)));
            }
        })
    });
    group.finish();
}

fn merkle(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle");
    // One iteration is milliseconds at 10,000 leaves; fewer samples keep a run short.
    group.sample_size(20);
    for leaves in [1_000, 10_000] {
        let hashes = sample_leaf_hashes(leaves);
        group.throughput(Throughput::Elements(leaves as u64));
        // What the anchor actor does per epoch: build the tree, then prove every leaf.
        group.bench_with_input(
            BenchmarkId::new("build_and_prove_all", leaves),
            &hashes,
            |b, hashes| {
                b.iter_batched(
                    || hashes.clone(),
                    |hashes| {
                        let tree = MerkleTree::new(hashes);
                        let proofs: Vec<_> = (0..leaves)
                            .map(|i| tree.proof(i).expect("leaf in range"))
                            .collect();
                        (tree.root(), proofs)
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

fn partition(c: &mut Criterion) {
    const PARTITIONS: u32 = 12;
    let keys = sample_partition_keys(1_000);
    let mut group = c.benchmark_group("partition");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("partition_for", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| u64::from(partition_for(black_box(k), PARTITIONS)))
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(core, template, message, dkim, bounce, merkle, partition);
criterion_main!(core);
