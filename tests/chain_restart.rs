//! `maily serve` killed between sending an anchor and its confirmation: the restarted
//! engine finds the transaction it kept in the store, waits for it, and the epoch is
//! anchored by that one transaction (a private EVM node, so the test can hold blocks).

mod common;

use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use common::procs::Serve;
use common::run;
use maily_chain::contracts::AnchorRegistry;
use maily_chain::testnode::LocalNode;
use maily_engine::CampaignStats;
use maily_engine::ports::AggregateBatch;
use maily_engine::ports::prelude::*;
use maily_engine::testkit::sample_campaign;
use maily_storage::{SqliteParams, SqliteStore};
use std::time::{Duration, Instant};

async fn wait_for<F, Fut>(what: &str, serve: &Serve, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}; the engine's log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn killing_the_engine_between_sending_and_confirming_anchors_the_epoch_once() {
    run(async {
        let node = LocalNode::private(31339).await;
        let deployed = node.deploy(0).await;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("maily.db");
        let store = SqliteStore::open(SqliteParams {
            url_or_path: db.display().to_string(),
            max_connections: 2,
            busy_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();

        // Figures to settle, as the analytics actor commits them.
        let campaign = sample_campaign("acme");
        let tenant = campaign.tenant.clone();
        store.upsert_tenant(&tenant, "Acme").await.unwrap();
        store.insert_campaign(&campaign).await.unwrap();
        let stats = CampaignStats {
            injected: 10,
            delivered: 9,
            bounced_hard: 1,
            ..Default::default()
        };
        store
            .commit_aggregates(&AggregateBatch {
                part: 0,
                group: "analytics".into(),
                fence: None,
                offsets: vec![],
                stats: vec![(tenant.clone(), campaign.id, stats)],
                messages: vec![],
            })
            .await
            .unwrap();

        let config = dir.path().join("maily.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\npath = \"{}\"\n[log.file]\ndir = \"{}\"\n[ownership]\nlease_ttl = \"3s\"\nrenew_interval = \"500ms\"\n\
                 [reward]\nepoch_interval = \"500ms\"\n[anchor]\ninterval = \"300ms\"\nchains = [\"ethereum\"]\n\
                 [anchor.evm.ethereum]\nrpc_url = \"{}\"\nchain_id = {}\nregistry = \"{}\"\n\
                 confirmations = 1\npoll_interval = \"100ms\"\nbump_after = \"1h\"\n",
                db.display(),
                dir.path().join("log").display(),
                node.url,
                node.chain_id,
                deployed.registry
            ),
        )
        .unwrap();
        // The key reaches the engine through the environment, as in production
        // (a key that has sent before: ganache renumbers a resent nonce-0 transaction).
        let signer = maily_chain::deploy::Deployer::connect(&node.url, &deployed.key)
            .await
            .unwrap()
            .address();
        let before = node.mined_nonce(signer).await;
        node.rpc("miner_stop", serde_json::json!([])).await;
        let key = [(
            "MAILY__ANCHOR__EVM__ETHEREUM__SIGNER_KEY",
            deployed.key.as_str(),
        )];
        let spawn = |member: &str| Serve::spawn_with(&config, member, dir.path(), &key);

        let first = spawn("engine-a");
        wait_for("the anchor was never sent", &first, || {
            let (store, node) = (&store, &node);
            async move {
                let Some(kept) = store.submission("ethereum", 1).await.unwrap() else {
                    return false;
                };
                let hash = B256::from(kept.hashes[0]);
                node.provider()
                    .get_transaction_by_hash(hash)
                    .await
                    .unwrap()
                    .is_some()
            }
        })
        .await;
        let sent = store.submission("ethereum", 1).await.unwrap().unwrap();
        let sent = Some(B256::from(sent.hashes[0]));
        assert!(
            !first.log().contains(&deployed.key[2..]),
            "the signer key was logged"
        );
        drop(first); // SIGKILL: no shutdown, no cleanup

        let second = spawn("engine-a");
        wait_for(
            "the restarted engine never found its transaction",
            &second,
            || {
                let log = second.log();
                async move { log.contains("found a transaction sent before a restart") }
            },
        )
        .await;
        assert_eq!(store.epochs_to_anchor("ethereum").await.unwrap(), vec![1]);
        node.rpc("miner_start", serde_json::json!([])).await;
        wait_for("the epoch was never anchored", &second, || {
            let store = &store;
            async move { store.epochs_to_anchor("ethereum").await.unwrap().is_empty() }
        })
        .await;

        let mined = node.mined_nonce(signer).await;
        assert_eq!(
            mined,
            before + 1,
            "a second transaction was sent:\n{}",
            second.log()
        );
        let logs = node
            .provider()
            .get_logs(
                &Filter::new()
                    .address(deployed.registry)
                    .event_signature(AnchorRegistry::Anchored::SIGNATURE_HASH)
                    .from_block(0u64),
            )
            .await
            .unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].transaction_hash, sent);
        assert_eq!(store.submission("ethereum", 1).await.unwrap(), None);
        assert!(second.terminate().success());
    });
}
