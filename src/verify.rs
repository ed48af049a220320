//! `maily verify`: checks a campaign's published figures against the roots on chain.
//!
//! Online, it reads the campaign's leaf and proof from the store, checks that they
//! hash up to the stored root, then reads each chain's root for the epoch (the
//! registry's `rootOf` for EVM chains, asking the registry's own `verify` too; the
//! ledger entry for the local ledger). Offline, it checks a proof file (the admin
//! API's proof body, or one written with `--export`) against a root given on the
//! command line, with no store and no network.

use crate::wiring;
use anyhow::{Context as _, bail};
use maily_api::admin::ProofBody;
use maily_chain::{Address, EvmReader};
use maily_config::{EvmSection, Settings};
use maily_engine::CampaignId;
use maily_engine::merkle::{Hash32, keccak, verify};
use maily_engine::ports::{Store, StoredProof};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `maily verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The campaign (UUID).
    #[arg(long, required_unless_present = "proof_file")]
    pub campaign: Option<String>,
    /// The anchored epoch.
    #[arg(long, required_unless_present = "proof_file")]
    pub epoch: Option<u64>,
    /// Read roots from this JSON-RPC URL instead of the configured one (needs --chain
    /// when several EVM chains are configured).
    #[arg(long)]
    pub rpc: Option<String>,
    /// Check only this chain of `anchor.chains`.
    #[arg(long)]
    pub chain: Option<String>,
    /// A TOML file layered over the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also write the leaf and proof to this file, for offline checking.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Check this proof file offline instead (needs --root).
    #[arg(long, conflicts_with_all = ["campaign", "epoch", "rpc", "chain", "export"], requires = "root")]
    pub proof_file: Option<PathBuf>,
    /// The root to check a proof file against (0x-prefixed hex), as read from a chain.
    #[arg(long, requires = "proof_file")]
    pub root: Option<String>,
}

/// A campaign's leaf and proof as a file: the admin API's proof body (its `stats`
/// are not checked here; the leaf encoding carries the figures).
pub type ProofFile = ProofBody;

fn hex32(h: &[u8]) -> String {
    format!("0x{}", hex::encode(h))
}

/// Parses 0x-prefixed (or bare) hex of exactly 32 bytes.
pub fn parse_hash(what: &str, text: &str) -> anyhow::Result<Hash32> {
    let bytes = hex::decode(text.trim().trim_start_matches("0x"))
        .with_context(|| format!("{what} {text:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("{what} {text:?} is {} bytes, not 32", b.len()))
}

/// The verdict on a proof file against a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileVerdict {
    /// The leaf with its proof hashes up to the root.
    Verified { leaf_hash: Hash32 },
    /// It does not; says what was checked.
    Failed(String),
}

/// Checks a proof file against `root`: the leaf encoding must be a v1 leaf for the
/// file's epoch and campaign, and hash up the proof to `root`.
pub fn verify_file(file: &ProofFile, root: &Hash32) -> anyhow::Result<FileVerdict> {
    let leaf = hex::decode(file.leaf.trim_start_matches("0x")).context("leaf is not hex")?;
    if leaf.len() != 137 || leaf[0] != maily_engine::merkle::LEAF_VERSION {
        bail!(
            "leaf is not a version-{} campaign leaf of 137 bytes (got {} bytes)",
            maily_engine::merkle::LEAF_VERSION,
            leaf.len()
        );
    }
    let epoch = u64::from_be_bytes(leaf[1..9].try_into().expect("8 bytes"));
    let campaign = CampaignId::from_bytes(leaf[9..25].try_into().expect("16 bytes"));
    if epoch != file.epoch || campaign.to_string() != file.campaign_id.trim() {
        return Ok(FileVerdict::Failed(format!(
            "the leaf is for campaign {campaign} in epoch {epoch}, but the file names campaign {} in epoch {}",
            file.campaign_id, file.epoch
        )));
    }
    let proof = file
        .proof
        .iter()
        .enumerate()
        .map(|(i, h)| parse_hash(&format!("proof[{i}]"), h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let leaf_hash = keccak(&keccak(&leaf));
    if verify(root, &leaf_hash, &proof) {
        Ok(FileVerdict::Verified { leaf_hash })
    } else {
        Ok(FileVerdict::Failed(format!(
            "leaf 0x{} with its {}-step proof does not hash up to root 0x{}",
            hex::encode(leaf_hash),
            proof.len(),
            hex::encode(root)
        )))
    }
}

/// Runs `maily verify`; an error when anything does not verify.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.proof_file {
        let root = parse_hash("--root", args.root.as_deref().unwrap_or_default())?;
        return run_offline(path, &root);
    }
    let settings = Settings::load(args.config.as_deref())?;
    let campaign = args.campaign.as_deref().unwrap_or_default();
    let campaign = CampaignId::parse(campaign.trim())
        .with_context(|| format!("--campaign {campaign:?} is not a campaign id"))?;
    let epoch = args.epoch.expect("clap requires --epoch");
    let store = wiring::open_store(&settings).await?;
    let report = check(&settings, &store, campaign, epoch, &args).await?;
    print!("{}", report.text);
    if report.verified {
        Ok(())
    } else {
        bail!("campaign {campaign} in epoch {epoch} did not verify")
    }
}

fn run_offline(path: &Path, root: &Hash32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading proof file {}", path.display()))?;
    let file: ProofFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a proof file", path.display()))?;
    match verify_file(&file, root)? {
        FileVerdict::Verified { leaf_hash } => {
            println!(
                "VERIFIED: campaign {} in epoch {}: leaf 0x{} is in the tree with root 0x{}",
                file.campaign_id,
                file.epoch,
                hex::encode(leaf_hash),
                hex::encode(root)
            );
            Ok(())
        }
        FileVerdict::Failed(why) => bail!("NOT VERIFIED: {why}"),
    }
}

/// What `maily verify` found: its printout and whether everything verified.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub verified: bool,
}

/// Checks a campaign's stored proof and every (or the chosen) chain's root.
pub async fn check(
    settings: &Settings,
    store: &std::sync::Arc<dyn Store>,
    campaign: CampaignId,
    epoch: u64,
    args: &VerifyArgs,
) -> anyhow::Result<Report> {
    use std::fmt::Write as _;
    let proof = store
        .proof(epoch, campaign)
        .await
        .context("reading the proof")?
        .with_context(|| {
            format!("no proof of campaign {campaign} in epoch {epoch}: the epoch is not anchored yet, or the campaign had no figures then")
        })?;
    if let Some(path) = &args.export {
        let json = serde_json::to_string_pretty(&ProofFile::from_stored(&proof))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let leaf_hash = proof.leaf.hash();
    let mut out = String::new();
    let mut verified = verify(&proof.root, &leaf_hash, &proof.proof);
    writeln!(out, "campaign {campaign}, epoch {epoch}")?;
    writeln!(
        out,
        "  leaf    0x{} (index {}, {} proof steps)",
        hex::encode(leaf_hash),
        proof.leaf_index,
        proof.proof.len()
    )?;
    writeln!(
        out,
        "  root    0x{} ({})",
        hex::encode(proof.root),
        if verified {
            "the stored leaf and proof hash up to it"
        } else {
            "the stored leaf and proof do NOT hash up to it"
        }
    )?;
    let chains: Vec<&String> = settings
        .anchor
        .chains
        .iter()
        .filter(|c| args.chain.as_ref().is_none_or(|only| only == *c))
        .collect();
    if chains.is_empty() {
        bail!(
            "--chain {:?} is not in anchor.chains {:?}",
            args.chain.as_deref().unwrap_or_default(),
            settings.anchor.chains
        );
    }
    let evm_count = chains.iter().filter(|c| c.as_str() != "ledger").count();
    if args.rpc.is_some() && evm_count != 1 {
        bail!("--rpc needs exactly one EVM chain: pick it with --chain");
    }
    let mut good = 0;
    for name in &chains {
        let (ok, line) = if name.as_str() == "ledger" {
            ledger_line(store, epoch, &proof.root).await?
        } else {
            let section = &settings.anchor.evm[name.as_str()];
            evm_line(name, section, args.rpc.as_deref(), epoch, &proof).await
        };
        writeln!(out, "  {name:<9} {line}")?;
        good += usize::from(ok);
    }
    verified &= good == chains.len();
    writeln!(
        out,
        "{}: {good} of {} chains hold this campaign's root",
        if verified { "VERIFIED" } else { "NOT VERIFIED" },
        chains.len()
    )?;
    Ok(Report {
        text: out,
        verified,
    })
}

async fn ledger_line(
    store: &std::sync::Arc<dyn Store>,
    epoch: u64,
    root: &Hash32,
) -> anyhow::Result<(bool, String)> {
    Ok(
        match store
            .ledger_entry(epoch)
            .await
            .context("reading the ledger")?
        {
            None => (
                false,
                format!("NOT ANCHORED: no ledger entry for epoch {epoch}"),
            ),
            Some(e) if &e.root == root => (
                true,
                format!(
                    "verified: ledger entry 0x{} holds the root",
                    hex::encode(e.hash)
                ),
            ),
            Some(e) => (
                false,
                format!("MISMATCH: the ledger holds root 0x{}", hex::encode(e.root)),
            ),
        },
    )
}

/// One EVM chain's verdict; unreachable chains are a failed line, not an error.
async fn evm_line(
    name: &str,
    c: &EvmSection,
    rpc: Option<&str>,
    epoch: u64,
    proof: &StoredProof,
) -> (bool, String) {
    match evm_check(name, c, rpc, epoch, proof).await {
        Ok(line) => line,
        Err(e) => (false, format!("UNCHECKED: {e:#}")),
    }
}

async fn evm_check(
    name: &str,
    c: &EvmSection,
    rpc: Option<&str>,
    epoch: u64,
    proof: &StoredProof,
) -> anyhow::Result<(bool, String)> {
    let publisher = publisher(name, c)?;
    let registry: Address = c.registry.parse().context("registry address")?;
    let url = rpc.unwrap_or(&c.rpc_url);
    let reader = EvmReader::new(
        name,
        url,
        registry,
        None,
        publisher,
        Duration::from_secs(10),
    )?;
    let id = reader.chain_id().await?;
    if id != c.chain_id {
        return Ok((
            false,
            format!(
                "WRONG CHAIN: {url} serves chain id {id}, {name} is chain id {}",
                c.chain_id
            ),
        ));
    }
    let Some(root) = reader.root_of(epoch).await? else {
        return Ok((
            false,
            format!(
                "NOT ANCHORED: {publisher} has no root for epoch {epoch} in registry {registry}"
            ),
        ));
    };
    if root != proof.root {
        return Ok((
            false,
            format!("MISMATCH: the registry holds root 0x{}", hex::encode(root)),
        ));
    }
    let contract_says = reader
        .verify(epoch, proof.leaf.hash(), &proof.proof)
        .await?;
    Ok((
        contract_says,
        format!(
            "{}: registry {registry} on chain id {id} holds the root for publisher {publisher}; its verify() says {contract_says}",
            if contract_says { "verified" } else { "REFUSED" }
        ),
    ))
}

/// The publisher whose roots are read: the signer's address if a key is configured,
/// else `publisher`.
fn publisher(name: &str, c: &EvmSection) -> anyhow::Result<Address> {
    if !c.signer_key.0.trim().is_empty() {
        let params = wiring::evm_params(name, c)?;
        return Ok(maily_chain::EvmChain::new(params)?.signer());
    }
    c.publisher
        .as_deref()
        .with_context(|| {
            format!("anchor.evm.{name}: set publisher (the anchoring address) or a signer key")
        })?
        .parse()
        .with_context(|| format!("anchor.evm.{name}.publisher is not an address"))
}

/// `maily reward-proof` arguments.
#[derive(Debug, clap::Args)]
pub struct RewardProofArgs {
    /// The settled epoch.
    #[arg(long)]
    pub epoch: u64,
    /// The payee account (0x-prefixed address).
    #[arg(long)]
    pub account: String,
    /// A TOML file layered over the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What an account claims from a distributor for an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardClaim {
    pub epoch: u64,
    pub account: String,
    /// Reward-token base units, decimal.
    pub amount: String,
    /// The epoch's reward root.
    pub root: String,
    /// Sibling hashes from the leaf up: `claim(epoch, account, amount, proof)`.
    pub proof: Vec<String>,
    /// Per chain with a distributor: whether its published root is this one.
    pub chains: Vec<ClaimChain>,
}

/// One distributor's state for a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimChain {
    pub chain: String,
    pub distributor: String,
    /// `published`, `not published yet`, `different root 0x…`, or why it was not read.
    pub status: String,
}

/// Rebuilds an account's reward leaf and proof for an epoch from the stored
/// settlement and `[reward.payees]`, and checks it against each distributor's root.
pub async fn reward_claim(
    settings: &Settings,
    store: &std::sync::Arc<dyn Store>,
    epoch: u64,
    account: &str,
) -> anyhow::Result<RewardClaim> {
    let address: Address = account
        .parse()
        .with_context(|| format!("--account {account:?} is not an address"))?;
    let settlement = store
        .settlement(epoch)
        .await
        .context("reading the settlement")?
        .with_context(|| format!("epoch {epoch} is not settled"))?;
    let payees = wiring::payees(settings)?;
    let tree = maily_engine::reward::RewardTree::build(&settlement.entries, &payees)
        .with_context(|| format!("nobody with a payee earned anything in epoch {epoch}"))?;
    let (leaf, proof) = tree.proof(&address.into_array()).with_context(|| {
        format!("{address} has no reward in epoch {epoch} (is it a payee in [reward.payees]?)")
    })?;
    let root = tree.root();
    let mut chains = Vec::new();
    for (name, c) in &settings.anchor.evm {
        let Some(distributor) = &c.distributor else {
            continue;
        };
        let status = match distributor_root(name, c, epoch).await {
            Ok(Some(r)) if r == root => "published".to_string(),
            Ok(Some(r)) => format!(
                "different root 0x{}: [reward.payees] changed since the epoch was published?",
                hex::encode(r)
            ),
            Ok(None) => "not published yet".to_string(),
            Err(e) => format!("not read: {e:#}"),
        };
        chains.push(ClaimChain {
            chain: name.clone(),
            distributor: distributor.clone(),
            status,
        });
    }
    Ok(RewardClaim {
        epoch,
        account: address.to_string(),
        amount: leaf.amount.to_string(),
        root: hex32(&root),
        proof: proof.iter().map(|h| hex32(h)).collect(),
        chains,
    })
}

async fn distributor_root(
    name: &str,
    c: &EvmSection,
    epoch: u64,
) -> anyhow::Result<Option<Hash32>> {
    let registry: Address = c.registry.parse().context("registry address")?;
    let distributor: Address = c
        .distributor
        .as_deref()
        .unwrap_or_default()
        .parse()
        .context("distributor address")?;
    let reader = EvmReader::new(
        name,
        &c.rpc_url,
        registry,
        Some(distributor),
        Address::ZERO,
        Duration::from_secs(10),
    )?;
    Ok(reader.reward_root_of(epoch).await?)
}

/// Runs `maily reward-proof`: prints the claim as JSON.
pub async fn run_reward_proof(args: RewardProofArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let store = wiring::open_store(&settings).await?;
    let claim = reward_claim(&settings, &store, args.epoch, &args.account).await?;
    println!("{}", serde_json::to_string_pretty(&claim)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::CampaignStats;
    use maily_engine::merkle::{CampaignLeaf, MerkleTree};

    fn stored() -> (Vec<StoredProof>, Hash32) {
        let leaves: Vec<CampaignLeaf> = (1..=5u8)
            .map(|i| CampaignLeaf {
                epoch: 4,
                campaign: CampaignId::from_bytes([i; 16]),
                stats: CampaignStats {
                    delivered: u64::from(i),
                    ..Default::default()
                },
                reward_total: u128::from(i) * 10,
            })
            .collect();
        let tree = MerkleTree::new(leaves.iter().map(CampaignLeaf::hash).collect());
        let proofs = leaves
            .into_iter()
            .enumerate()
            .map(|(i, leaf)| StoredProof {
                leaf,
                leaf_index: i as u32,
                root: tree.root(),
                proof: tree.proof(i).unwrap(),
            })
            .collect();
        (proofs, tree.root())
    }

    #[test]
    fn every_exported_proof_verifies_offline_and_tampering_fails() {
        let (proofs, root) = stored();
        for p in &proofs {
            let file = ProofFile::from_stored(p);
            let json = serde_json::to_string(&file).unwrap();
            let back: ProofFile = serde_json::from_str(&json).unwrap();
            assert!(matches!(
                verify_file(&back, &root).unwrap(),
                FileVerdict::Verified { .. }
            ));

            // A changed counter (the delivered figure's last byte).
            let mut tampered = back.clone();
            let mut leaf = hex::decode(&tampered.leaf[2..]).unwrap();
            leaf[25 + 8 + 7] ^= 1;
            tampered.leaf = format!("0x{}", hex::encode(leaf));
            assert!(matches!(
                verify_file(&tampered, &root).unwrap(),
                FileVerdict::Failed(_)
            ));

            // A changed proof step.
            let mut tampered = back.clone();
            tampered.proof[0] = format!("0x{}", "11".repeat(32));
            assert!(matches!(
                verify_file(&tampered, &root).unwrap(),
                FileVerdict::Failed(_)
            ));

            // A leaf moved to another campaign's file.
            let mut moved = back.clone();
            moved.campaign_id = CampaignId::from_bytes([9; 16]).to_string();
            let FileVerdict::Failed(why) = verify_file(&moved, &root).unwrap() else {
                panic!("a leaf under another campaign's name verified");
            };
            assert!(why.contains("but the file names campaign"), "{why}");
        }
        let mut other_root = root;
        other_root[0] ^= 1;
        let file = ProofFile::from_stored(&proofs[0]);
        assert!(matches!(
            verify_file(&file, &other_root).unwrap(),
            FileVerdict::Failed(_)
        ));
    }

    #[test]
    fn malformed_files_are_named() {
        let (proofs, root) = stored();
        let mut file = ProofFile::from_stored(&proofs[0]);
        file.leaf = "0x00".into();
        let err = verify_file(&file, &root).unwrap_err().to_string();
        assert!(err.contains("137 bytes (got 1 bytes)"), "{err}");
        let err = parse_hash("--root", "0x1234").unwrap_err().to_string();
        assert_eq!(err, "--root \"0x1234\" is 2 bytes, not 32");
    }
}
