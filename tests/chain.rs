//! The engine anchoring on two real EVM chains (`scripts/evm-node.sh`: ethereum,
//! chain id 1337; polygon, 80002) besides the local ledger: three epochs of real
//! campaigns, every campaign verified with `maily verify` on every chain, a reward
//! claimed once; and mail flowing while a chain is unreachable.

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolCall;
use common::{Harness, row, run};
use maily::verify::{ProofFile, RewardClaim, VerifyArgs, check};
use maily_chain::contracts::{RewardDistributor, RewardToken};
use maily_chain::deploy::Deployer;
use maily_chain::testnode::{Deployment, LocalNode};
use maily_config::Settings;
use maily_engine::reward::RewardTree;
use maily_engine::{CampaignId, TenantId};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn chain_toml(name: &str, node: &LocalNode, d: &Deployment) -> String {
    format!(
        "[anchor.evm.{name}]\nrpc_url = \"{}\"\nchain_id = {}\nregistry = \"{}\"\ndistributor = \"{}\"\nsigner_key = \"{}\"\nconfirmations = 2\npoll_interval = \"200ms\"\n",
        node.url, node.chain_id, d.registry, d.distributor, d.key
    )
}

fn verify_args() -> VerifyArgs {
    VerifyArgs {
        campaign: None,
        epoch: None,
        rpc: None,
        chain: None,
        config: None,
        export: None,
        proof_file: None,
        root: None,
    }
}

fn maily(args: &[&str]) -> (bool, String) {
    maily_with(args, &[])
}

fn maily_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maily"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running maily");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The contracts `maily deploy-contracts` puts on `node`, read from the section it
/// prints.
async fn deploy_cli(node: &LocalNode, name: &str, supply: u128) -> Deployment {
    let key = node.funded_key().await;
    let (ok, text) = maily_with(
        &[
            "deploy-contracts",
            "--rpc",
            &node.url,
            "--name",
            name,
            "--reward-supply",
            &supply.to_string(),
        ],
        &[("MAILY_DEPLOYER_KEY", &key)],
    );
    assert!(ok, "{text}");
    assert!(text.contains(&format!("[anchor.evm.{name}]")), "{text}");
    assert!(!text.contains(&key[2..]), "the key was printed");
    let value = |prefix: &str| -> Address {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect(prefix);
        line.trim_matches(|c| c == '"' || c == ' ')
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Deployment {
        registry: value("registry = "),
        distributor: value("distributor = "),
        token: value("# Reward token "),
        key,
    }
}

/// `maily verify` of a campaign in an epoch with the configuration at `cfg`.
fn verify_cli(cfg: &str, campaign: CampaignId, epoch: u64, more: &[&str]) -> (bool, String) {
    let (campaign, epoch) = (campaign.to_string(), epoch.to_string());
    let mut args = vec![
        "verify",
        "--config",
        cfg,
        "--campaign",
        &campaign,
        "--epoch",
        &epoch,
    ];
    args.extend_from_slice(more);
    maily(&args)
}

#[test]
fn three_epochs_are_anchored_on_two_chains_and_every_campaign_verifies() {
    run(async {
        let eth = LocalNode::shared("ethereum").await;
        let pol = LocalNode::shared("polygon").await;
        let supply = 10u128.pow(24);
        let (eth_d, pol_d) = (
            eth.deploy(supply).await,
            deploy_cli(&pol, "polygon", supply).await,
        );
        let alice = Address::repeat_byte(0xa1);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("maily.toml");
        std::fs::write(
            &config,
            format!(
                "[store]\npath = \"{}\"\n[anchor]\nchains = [\"ledger\", \"ethereum\", \"polygon\"]\n{}{}[reward.payees]\nacme = \"{alice}\"\n",
                dir.path().join("maily.db").display(),
                chain_toml("ethereum", &eth, &eth_d),
                chain_toml("polygon", &pol, &pol_d),
            ),
        )
        .unwrap();
        let (file, db) = (config.clone(), dir.path().join("maily.db"));
        let h = Harness::start_with(HashMap::new(), move |f| {
            use figment::providers::Format as _;
            f.merge(figment::providers::Toml::file(&file))
                .merge(("store.path", db.display().to_string()))
        })
        .await;
        let settings = Settings::load(Some(&config)).unwrap();

        let mut epochs: Vec<(u64, Vec<CampaignId>)> = Vec::new();
        for e in 0..3 {
            let campaigns = [h.campaign("a").await, h.campaign("b").await];
            let mut accepted = Vec::new();
            for (k, c) in campaigns.iter().enumerate() {
                let rows: Vec<_> = (0..40).map(|i| row(e * 1000 + k * 100 + i)).collect();
                accepted.push((c.id, h.intake.enqueue(c, rows).await.unwrap().accepted));
            }
            h.wait_finished(&accepted).await;
            let (epoch, receipts) = h.engine.close_epoch().await.expect("epoch closes");
            let epoch = epoch.expect("settled");
            let mut chains: Vec<&str> = receipts.iter().map(|r| r.chain.as_str()).collect();
            chains.sort();
            assert_eq!(
                chains,
                [
                    "ethereum",
                    "ethereum/rewards",
                    "ledger",
                    "polygon",
                    "polygon/rewards"
                ],
                "epoch {epoch}"
            );
            epochs.push((epoch, campaigns.iter().map(|c| c.id).collect()));
        }

        // Every campaign of every epoch (each epoch's leaves cover all campaigns so
        // far) verifies on the ledger and both chains.
        for (epoch, _) in &epochs {
            for (_, ids) in &epochs {
                for id in ids {
                    let settlement = h.ports.store.settlement(*epoch).await.unwrap().unwrap();
                    if !settlement.entries.iter().any(|e| e.campaign == *id) {
                        continue;
                    }
                    let report = check(&settings, &h.ports.store, *id, *epoch, &verify_args())
                        .await
                        .unwrap_or_else(|e| {
                            panic!("epoch {epoch}, campaign {id}: {e:#}; settlement {settlement:?}")
                        });
                    assert!(report.verified, "{}", report.text);
                    assert!(
                        report.text.contains("VERIFIED: 3 of 3 chains"),
                        "{}",
                        report.text
                    );
                }
            }
        }

        // The command line: online, then the exported file offline, then tampered.
        let (epoch, ids) = &epochs[1];
        let exported = dir.path().join("proof.json");
        let cfg = config.to_str().unwrap();
        let (ok, text) = verify_cli(
            cfg,
            ids[0],
            *epoch,
            &["--export", exported.to_str().unwrap()],
        );
        assert!(ok, "{text}");
        assert!(
            text.contains("ethereum  verified") && text.contains("polygon   verified"),
            "{text}"
        );
        let root = h.ports.chains[1].root(*epoch).await.unwrap().unwrap();
        let root_hex = format!("0x{}", hex::encode(root));
        let offline = |file: &Path| {
            maily(&[
                "verify",
                "--proof-file",
                file.to_str().unwrap(),
                "--root",
                &root_hex,
            ])
        };
        let (ok, text) = offline(&exported);
        assert!(ok && text.starts_with("VERIFIED"), "{text}");
        let mut file: ProofFile =
            serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
        let mut leaf = hex::decode(&file.leaf[2..]).unwrap();
        leaf[136] ^= 1; // the reward total's last byte
        file.leaf = format!("0x{}", hex::encode(leaf));
        let tampered = dir.path().join("tampered.json");
        std::fs::write(&tampered, serde_json::to_string(&file).unwrap()).unwrap();
        let (ok, text) = offline(&tampered);
        assert!(!ok && text.contains("NOT VERIFIED"), "{text}");
        // Against the node's answer for a campaign that is not in the epoch: named.
        let (ok, text) = verify_cli(cfg, CampaignId::new(), 1, &[]);
        assert!(!ok && text.contains("no proof of campaign"), "{text}");
        // A wrong RPC for a chain: named, and not verified.
        let (ok, text) = verify_cli(
            cfg,
            ids[0],
            *epoch,
            &["--chain", "ethereum", "--rpc", &pol.url],
        );
        assert!(!ok && text.contains("WRONG CHAIN"), "{text}");

        // The reward of epoch 1 is claimable once on each chain, with the proof
        // `maily reward-proof` prints; it matches the tree rebuilt here.
        let (ok, text) = maily(&[
            "reward-proof",
            "--config",
            cfg,
            "--epoch",
            &epochs[0].0.to_string(),
            "--account",
            &alice.to_string(),
        ]);
        assert!(ok, "{text}");
        let claim: RewardClaim = serde_json::from_str(&text).unwrap();
        let settlement = h
            .ports
            .store
            .settlement(epochs[0].0)
            .await
            .unwrap()
            .unwrap();
        let payees = HashMap::from([(TenantId::parse("acme").unwrap(), alice.into_array())]);
        let tree = RewardTree::build(&settlement.entries, &payees).expect("acme earned");
        let (leaf, _) = tree.proof(&alice.into_array()).unwrap();
        assert_eq!(claim.amount, leaf.amount.to_string());
        assert_eq!(claim.root, format!("0x{}", hex::encode(tree.root())));
        let statuses: Vec<&str> = claim.chains.iter().map(|c| c.status.as_str()).collect();
        assert_eq!(statuses, ["published", "published"], "{text}");
        let proof: Vec<B256> = claim.proof.iter().map(|p| p.parse().unwrap()).collect();
        let (ok, text) = maily(&[
            "reward-proof",
            "--config",
            cfg,
            "--epoch",
            "1",
            "--account",
            &Address::repeat_byte(0x77).to_string(),
        ]);
        assert!(!ok && text.contains("has no reward in epoch 1"), "{text}");
        for (node, d) in [(&eth, &eth_d), (&pol, &pol_d)] {
            let claimer = Deployer::connect(&node.url, &node.funded_key().await)
                .await
                .unwrap();
            let claim = RewardDistributor::claimCall {
                epoch: epochs[0].0,
                account: alice,
                amount: U256::from(leaf.amount),
                proof: proof.clone(),
            }
            .abi_encode();
            claimer
                .call(d.distributor, claim.clone())
                .await
                .expect("claim");
            let err = claimer.call(d.distributor, claim).await.unwrap_err();
            assert!(err.to_string().contains("AlreadyClaimed"), "{err}");
            let out = claimer
                .read(
                    d.token,
                    RewardToken::balanceOfCall { account: alice }.abi_encode(),
                )
                .await
                .unwrap();
            let balance = RewardToken::balanceOfCall::abi_decode_returns(&out).unwrap();
            assert_eq!(balance, U256::from(leaf.amount));
        }
        assert_eq!(h.engine.restarts(), 0);
        h.engine.shutdown().await;
    });
}

#[test]
fn mail_keeps_flowing_while_a_chain_is_unreachable() {
    run(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let h = Harness::start_with(HashMap::new(), move |f| {
            f.merge(("anchor.chains", vec!["ledger", "ethereum"]))
                .merge((
                    "anchor.evm.ethereum.rpc_url",
                    format!("http://127.0.0.1:{port}"),
                ))
                .merge(("anchor.evm.ethereum.chain_id", 1337))
                .merge((
                    "anchor.evm.ethereum.registry",
                    Address::repeat_byte(1).to_string(),
                ))
                .merge((
                    "anchor.evm.ethereum.signer_key",
                    maily_chain::testnode::fresh_key(),
                ))
                .merge(("anchor.evm.ethereum.rpc_timeout", "1s"))
        })
        .await;
        let c = h.campaign("news").await;
        let rows: Vec<_> = (0..50).map(row).collect();
        let accepted = h.intake.enqueue(&c, rows).await.unwrap().accepted;
        h.wait_finished(&[(c.id, accepted)]).await;
        assert_eq!(h.stats(c.id).await.delivered, 50);

        let (epoch, receipts) = h
            .engine
            .close_epoch()
            .await
            .expect("the anchor actor answers");
        let epoch = epoch.unwrap();
        // The ledger anchored; ethereum's epoch waits (the lag the metric reports).
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].chain, "ledger");
        assert_eq!(
            h.ports.store.epochs_to_anchor("ethereum").await.unwrap(),
            vec![epoch]
        );
        assert!(
            h.ports
                .store
                .epochs_to_anchor("ledger")
                .await
                .unwrap()
                .is_empty()
        );

        // More mail still goes out, and the actors were never restarted.
        let c2 = h.campaign("more").await;
        let rows: Vec<_> = (100..130).map(row).collect();
        let accepted = h.intake.enqueue(&c2, rows).await.unwrap().accepted;
        h.wait_finished(&[(c2.id, accepted)]).await;
        assert_eq!(h.stats(c2.id).await.delivered, 30);
        assert_eq!(h.engine.restarts(), 0);
        h.engine.shutdown().await;
    });
}
