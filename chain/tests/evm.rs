//! The EVM adapter against real nodes (`scripts/evm-node.sh`): the two shared chains
//! (ethereum, chain id 1337; polygon, 80002) and private nodes for tests that stop
//! mining. Every test deploys its own contracts from a fresh key, so tests run side
//! by side.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use maily_chain::contracts::{RewardDistributor, RewardToken};
use maily_chain::deploy::Deployer;
use maily_chain::testnode::LocalNode;
use maily_chain::{EvmChain, EvmParams};
use maily_engine::merkle::{CampaignLeaf, Hash32, MerkleTree, verify};
use maily_engine::ports::{Chain, ChainError, SettlementEntry, Store};
use maily_engine::reward::RewardTree;
use maily_engine::{CampaignId, CampaignStats, TenantId};
use maily_storage::SqliteStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn leaves(epoch: u64, campaigns: &[CampaignId]) -> Vec<CampaignLeaf> {
    campaigns
        .iter()
        .enumerate()
        .map(|(i, c)| CampaignLeaf {
            epoch,
            campaign: *c,
            stats: CampaignStats {
                injected: 100,
                delivered: 90 + i as u64 + epoch,
                bounced_hard: 3,
                opened: 40 * epoch,
                ..Default::default()
            },
            reward_total: 1_000 * u128::from(epoch) + i as u128,
        })
        .collect()
}

/// Logs to the test's output with `RUST_LOG` (for example `RUST_LOG=maily_chain=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn signer_nonce(node: &LocalNode, chain: &EvmChain) -> u64 {
    node.mined_nonce(chain.signer()).await
}

#[tokio::test]
async fn three_epochs_anchor_on_both_chains_and_every_campaign_verifies() {
    let campaigns: Vec<CampaignId> = (0..7).map(|_| CampaignId::new()).collect();
    for name in ["ethereum", "polygon"] {
        let node = LocalNode::shared(name).await;
        let deployed = node.deploy(0).await;
        let key = node.funded_key().await;
        let chain = EvmChain::new(node.params(&key, deployed.registry)).expect("params");
        for epoch in 1..=3 {
            let mut leaves = leaves(epoch, &campaigns);
            leaves.sort_by_key(|l| l.campaign);
            let tree = MerkleTree::new(leaves.iter().map(CampaignLeaf::hash).collect());
            let root = tree.root();
            let receipt = chain.anchor(epoch, root).await.expect("anchored");
            assert_eq!(
                (receipt.chain.as_str(), receipt.epoch, receipt.root),
                (name, epoch, root)
            );
            assert_eq!(chain.root(epoch).await.unwrap(), Some(root));
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = tree.proof(i).unwrap();
                assert!(verify(&root, &leaf.hash(), &proof));
                assert!(
                    chain
                        .reader()
                        .verify(epoch, leaf.hash(), &proof)
                        .await
                        .unwrap(),
                    "{name}: campaign {} of epoch {epoch} does not verify on chain",
                    leaf.campaign
                );
                // A changed figure, or a changed proof step, does not verify.
                let mut tampered = leaf.clone();
                tampered.stats.delivered += 1;
                assert!(
                    !chain
                        .reader()
                        .verify(epoch, tampered.hash(), &proof)
                        .await
                        .unwrap()
                );
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = [first[0] ^ 1; 32];
                    assert!(
                        !chain
                            .reader()
                            .verify(epoch, leaf.hash(), &bad)
                            .await
                            .unwrap()
                    );
                }
                // A right leaf under another epoch does not verify either.
                let other = if epoch == 1 { 2 } else { 1 };
                if other < epoch {
                    assert!(
                        !chain
                            .reader()
                            .verify(other, leaf.hash(), &proof)
                            .await
                            .unwrap()
                    );
                }
            }
            // Anchoring again answers the first transaction and sends nothing.
            let sent = signer_nonce(&node, &chain).await;
            let again = chain.anchor(epoch, root).await.expect("idempotent");
            assert_eq!(again.reference, receipt.reference);
            assert_eq!(signer_nonce(&node, &chain).await, sent);
            // Another root for the same epoch is a conflict, not a transaction.
            let mut other_root = root;
            other_root[31] ^= 1;
            let err = chain.anchor(epoch, other_root).await.unwrap_err();
            assert!(matches!(err, ChainError::Conflict { .. }), "{err}");
            assert_eq!(signer_nonce(&node, &chain).await, sent);
        }
        assert_eq!(
            signer_nonce(&node, &chain).await,
            3,
            "{name}: one transaction per epoch"
        );
        // A fresh adapter (a restart) finds every epoch through the registry's events.
        let restarted = EvmChain::new(node.params(&key, deployed.registry)).unwrap();
        let root = chain.root(2).await.unwrap().unwrap();
        let receipt = restarted.anchor(2, root).await.expect("found");
        assert!(receipt.reference.starts_with("0x") && receipt.reference.len() == 66);
        assert_eq!(signer_nonce(&node, &restarted).await, 3);
    }
}

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn a_reward_root_is_published_and_each_claim_pays_once() {
    let node = LocalNode::shared("polygon").await;
    let supply = 10u128.pow(21);
    let deployed = node.deploy(supply).await;
    // The distributor's owner publishes; the registry is any anchoring contract.
    let mut params = node.params(&deployed.key, deployed.registry);
    params.distributor = Some(deployed.distributor);
    let chain = EvmChain::new(params).unwrap();
    assert!(chain.pays_rewards());

    let (alice, bob) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb0));
    let payees = HashMap::from([
        (tenant("acme"), alice.into_array()),
        (tenant("bolt"), bob.into_array()),
    ]);
    let entry = |t: &str, delta| SettlementEntry {
        tenant: tenant(t),
        campaign: CampaignId::new(),
        stats: CampaignStats::default(),
        reward_total: delta,
        reward_delta: delta,
    };
    let entries = [entry("acme", 700), entry("acme", 300), entry("bolt", 5_000)];
    let tree = RewardTree::build(&entries, &payees).expect("two payees");
    let receipt = chain
        .publish_rewards(4, tree.root())
        .await
        .expect("published");
    assert_eq!(receipt.epoch, 4);
    let again = chain
        .publish_rewards(4, tree.root())
        .await
        .expect("idempotent");
    assert_eq!(again.reference, receipt.reference);

    // Anyone may send the claim; the tokens go to the account in the leaf.
    let claimer = Deployer::connect(&node.url, &node.funded_key().await)
        .await
        .unwrap();
    let (leaf, proof) = tree.proof(&alice.into_array()).unwrap();
    assert_eq!(leaf.amount, 1_000);
    let claim = |amount: u128, proof: &[Hash32]| RewardDistributor::claimCall {
        epoch: 4,
        account: alice,
        amount: U256::from(amount),
        proof: proof.iter().map(|p| B256::from(*p)).collect(),
    };
    // A claim for more than the leaf says fails its proof.
    let err = claimer
        .call(deployed.distributor, claim(1_001, &proof).abi_encode())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("InvalidProof"), "{err}");
    claimer
        .call(deployed.distributor, claim(1_000, &proof).abi_encode())
        .await
        .expect("first claim");
    let balance = |who: Address| {
        let claimer = &claimer;
        let token = deployed.token;
        async move {
            let out = claimer
                .read(
                    token,
                    RewardToken::balanceOfCall { account: who }.abi_encode(),
                )
                .await
                .unwrap();
            RewardToken::balanceOfCall::abi_decode_returns(&out).unwrap()
        }
    };
    assert_eq!(balance(alice).await, U256::from(1_000));
    let err = claimer
        .call(deployed.distributor, claim(1_000, &proof).abi_encode())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AlreadyClaimed"), "{err}");
    assert_eq!(balance(alice).await, U256::from(1_000));
    assert_eq!(
        balance(deployed.distributor).await,
        U256::from(supply - 1_000)
    );
}

#[tokio::test]
async fn a_restart_between_sending_and_confirming_does_not_anchor_twice() {
    logs();
    let node = LocalNode::private(31337).await;
    let deployed = node.deploy(0).await;
    // The deploying key has sent transactions before: ganache gives a replacement
    // at nonce 0 a fresh nonce instead (a node quirk; real nodes keep the nonce).
    let key = deployed.key.clone();
    let root = [7u8; 32];
    node.rpc("miner_stop", serde_json::json!([])).await;

    // The engine's store keeps the unconfirmed transaction across the restart.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_temp().await.unwrap());
    let first = EvmChain::new(node.params(&key, deployed.registry))
        .unwrap()
        .with_journal(store.clone());
    let signer = first.signer();
    let before = node.mined_nonce(signer).await;
    let sending = tokio::spawn(async move { first.anchor(1, root).await });
    // Wait until the transaction is in the node's pool, then "kill" the engine.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the anchor was never sent"
        );
        if let Some(kept) = store.submission("private", 1).await.unwrap() {
            let hash = B256::from(kept.hashes[0]);
            if node
                .provider()
                .get_transaction_by_hash(hash)
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sending.abort();
    assert!(sending.await.unwrap_err().is_cancelled());
    let kept = store
        .submission("private", 1)
        .await
        .unwrap()
        .expect("kept before sending");
    assert_eq!(kept.nonce, before);

    // The restarted engine finds its transaction pending and waits for it.
    let second = EvmChain::new(node.params(&key, deployed.registry))
        .unwrap()
        .with_journal(store.clone());
    let waiting = tokio::spawn(async move { second.anchor(1, root).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "confirmed with mining stopped");
    node.rpc("miner_start", serde_json::json!([])).await;
    let receipt = waiting.await.unwrap().expect("anchored");

    let mined = node.mined_nonce(signer).await;
    assert_eq!(
        mined,
        before + 1,
        "a second transaction was sent for the epoch"
    );
    assert_eq!(receipt.reference, format!("{}", B256::from(kept.hashes[0])));
    assert_eq!(
        store.submission("private", 1).await.unwrap(),
        None,
        "kept after confirming"
    );
    let tx: B256 = receipt.reference.parse().unwrap();
    let r = node
        .provider()
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .expect("the receipt's transaction is mined");
    assert!(r.status());
}

#[tokio::test]
async fn a_stuck_transaction_is_resubmitted_with_higher_fees_under_the_cap() {
    logs();
    let node = LocalNode::private(31338).await;
    let deployed = node.deploy(0).await;
    let key = deployed.key.clone(); // not at nonce 0: see the restart test
    let mut params: EvmParams = node.params(&key, deployed.registry);
    params.bump_after = Duration::from_millis(600);
    params.priority_fee_per_gas = 1_000_000_000;
    params.max_fee_per_gas = 6_000_000_000;
    let cap = params.max_fee_per_gas;
    let chain = EvmChain::new(params).unwrap();
    let signer = chain.signer();
    let before = signer_nonce(&node, &chain).await;
    node.rpc("miner_stop", serde_json::json!([])).await;
    let sending = tokio::spawn(async move { chain.anchor(9, [9u8; 32]).await });
    tokio::time::sleep(Duration::from_secs(4)).await;
    node.rpc("miner_start", serde_json::json!([])).await;
    let receipt = sending.await.unwrap().expect("anchored");
    let tx = node
        .provider()
        .get_transaction_by_hash(receipt.reference.parse().unwrap())
        .await
        .unwrap()
        .expect("mined transaction");
    use alloy::consensus::Transaction as _;
    let tip = tx.inner.max_priority_fee_per_gas().unwrap();
    assert!(
        tip > 1_000_000_000,
        "the mined version was never bumped (tip {tip})"
    );
    assert!(
        tx.inner.max_fee_per_gas() <= cap,
        "the fee cap was exceeded"
    );
    let mined = node.mined_nonce(signer).await;
    assert_eq!(
        mined,
        before + 1,
        "only one version of the transaction is mined"
    );
}

#[tokio::test]
async fn bad_chains_and_signers_give_clear_errors() {
    let node = LocalNode::shared("ethereum").await;
    let deployed = node.deploy(1_000).await;
    let key = node.funded_key().await;

    // Nothing listens there.
    let mut params = node.params(&key, deployed.registry);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    params.rpc_url = format!("http://127.0.0.1:{port}");
    let err = EvmChain::new(params)
        .unwrap()
        .anchor(1, [1; 32])
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    // The node is another chain than configured.
    let mut params = node.params(&key, deployed.registry);
    params.chain_id = 1;
    let err = EvmChain::new(params)
        .unwrap()
        .anchor(1, [1; 32])
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::Misconfigured { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("serves chain id 1337, but chain_id is 1"),
        "{err}"
    );

    // No contract at the registry address.
    let params = node.params(&key, Address::repeat_byte(0x42));
    let err = EvmChain::new(params)
        .unwrap()
        .anchor(1, [1; 32])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no contract at the registry address"),
        "{err}"
    );

    // A signer without funds.
    let broke = maily_chain::testnode::fresh_key();
    let chain = EvmChain::new(node.params(&broke, deployed.registry)).unwrap();
    let err = chain.anchor(1, [1; 32]).await.unwrap_err();
    let ChainError::Underfunded { signer, reason, .. } = &err else {
        panic!("not an underfunded error: {err}");
    };
    assert_eq!(signer, &chain.signer().to_string());
    assert!(reason.contains("it holds 0 wei"), "{err}");
    assert!(
        !err.to_string().contains(broke.trim_start_matches("0x")),
        "the key leaked: {err}"
    );

    // A contract that is not a registry: its reads revert, nothing is sent.
    let chain = EvmChain::new(node.params(&key, deployed.token)).unwrap();
    let err = chain.anchor(1, [1; 32]).await.unwrap_err();
    assert!(matches!(err, ChainError::Rejected { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("rootOf at {}: reverted", deployed.token)),
        "{err}"
    );
    assert_eq!(signer_nonce(&node, &chain).await, 0);

    // A zero root reverts by name, before anything is sent.
    let chain = EvmChain::new(node.params(&key, deployed.registry)).unwrap();
    let err = chain.anchor(1, [0; 32]).await.unwrap_err();
    assert!(
        err.to_string().contains("would revert: ZeroRoot()"),
        "{err}"
    );
    assert_eq!(signer_nonce(&node, &chain).await, 0);

    // A fee cap below the base fee.
    let mut params = node.params(&key, deployed.registry);
    params.max_fee_per_gas = 1;
    params.priority_fee_per_gas = 1;
    let err = EvmChain::new(params)
        .unwrap()
        .anchor(1, [1; 32])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("above the fee cap"), "{err}");
}

#[tokio::test]
async fn a_receipt_dropped_by_a_reorg_is_not_taken_and_the_anchor_is_sent_again() {
    logs();
    let node = LocalNode::private(31340).await;
    let deployed = node.deploy(0).await;
    let key = deployed.key.clone(); // not at nonce 0: see the restart test
    let mut params = node.params(&key, deployed.registry);
    params.confirmations = 4;
    params.bump_after = Duration::from_secs(1);
    params.poll_interval = Duration::from_millis(100);
    let watcher = EvmChain::new(params.clone()).unwrap();
    let chain = EvmChain::new(params).unwrap();
    let before = signer_nonce(&node, &chain).await;
    let root = [5u8; 32];
    let snapshot = node.rpc("evm_snapshot", serde_json::json!([])).await;

    let sending = tokio::spawn(async move { chain.anchor(5, root).await });
    // Mined once: roll the chain back to before it, as a reorg would.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while watcher.root(5).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "never mined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sending.is_finished(), "confirmed at one block of four");
    assert_eq!(
        node.rpc("evm_revert", serde_json::json!([snapshot])).await,
        serde_json::json!(true)
    );
    assert_eq!(
        watcher.root(5).await.unwrap(),
        None,
        "the reorg did not drop it"
    );

    let receipt = sending.await.unwrap().expect("anchored after the reorg");
    assert_eq!(watcher.root(5).await.unwrap(), Some(root));
    let tx: B256 = receipt.reference.parse().unwrap();
    let mined = node
        .provider()
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .expect("the recorded transaction is on the canonical chain");
    assert!(mined.status());
    assert_eq!(signer_nonce(&node, &watcher).await, before + 1);
}

#[tokio::test]
async fn concurrent_writes_from_one_signer_take_their_own_nonces() {
    let node = LocalNode::shared("ethereum").await;
    let deployed = node.deploy(0).await;
    let mut params = node.params(&deployed.key, deployed.registry);
    params.distributor = Some(deployed.distributor);
    let chain = EvmChain::new(params).unwrap();
    let before = signer_nonce(&node, &chain).await;
    let (a, b, c) = tokio::join!(
        chain.anchor(1, [1; 32]),
        chain.anchor(2, [2; 32]),
        chain.publish_rewards(1, [3; 32]),
    );
    let refs = [
        a.unwrap().reference,
        b.unwrap().reference,
        c.unwrap().reference,
    ];
    assert!(refs[0] != refs[1] && refs[1] != refs[2] && refs[0] != refs[2]);
    assert_eq!(signer_nonce(&node, &chain).await, before + 3);
    assert_eq!(chain.root(1).await.unwrap(), Some([1; 32]));
    assert_eq!(chain.root(2).await.unwrap(), Some([2; 32]));
    assert_eq!(
        chain.reader().reward_root_of(1).await.unwrap(),
        Some([3; 32])
    );
}
