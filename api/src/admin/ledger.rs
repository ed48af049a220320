//! Anchors (the local ledger's entries), Merkle proofs of campaigns in anchored epochs,
//! and settlements. Hashes are `0x`-prefixed lower-case hex; rewards (u128) are
//! decimal strings.

use super::access::operator;
use super::campaigns::StatsBody;
use super::extract::Caller;
use super::problem::{self, Problem};
use super::{State, ok, run};
use crate::auth::Scope;
use actix_web::{HttpResponse, web};
use maily_engine::CampaignId;
use maily_engine::ports::{LedgerEntry, Settlement, StoredProof};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// `{epoch}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct EpochPath {
    /// A reward epoch (from 1).
    pub epoch: u64,
}

/// `{epoch}` and `{campaign}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ProofPath {
    /// An anchored epoch (from 1).
    pub epoch: u64,
    /// The campaign's id (a UUID).
    pub campaign: String,
}

fn hex32(h: &[u8]) -> String {
    format!("0x{}", hex::encode(h))
}

/// One anchored epoch of the local ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct Anchor {
    pub epoch: u64,
    /// The Merkle root of the epoch's campaign leaves.
    pub root: String,
    /// The previous entry's hash (zeros for the first).
    pub prev: String,
    /// This entry's hash, chaining it to `prev`.
    pub hash: String,
    pub at: String,
}

impl From<&LedgerEntry> for Anchor {
    fn from(e: &LedgerEntry) -> Self {
        Anchor {
            epoch: e.epoch,
            root: hex32(&e.root),
            prev: hex32(&e.prev),
            hash: hex32(&e.hash),
            at: e.at.to_rfc3339(),
        }
    }
}

/// Every ledger entry, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Anchors {
    pub anchors: Vec<Anchor>,
}

/// A campaign's leaf in an anchored epoch with its inclusion proof (OpenZeppelin
/// `MerkleProof` compatible: sorted pairs). Also the proof file `maily verify` writes
/// and checks offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProofBody {
    pub epoch: u64,
    pub campaign_id: String,
    pub root: String,
    /// The canonical leaf encoding (v1).
    pub leaf: String,
    pub leaf_index: u32,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<String>,
    pub stats: StatsBody,
    /// Cumulative reward up to this epoch, in base units.
    pub reward_total: String,
}

impl ProofBody {
    /// The body of a stored proof.
    pub fn from_stored(p: &StoredProof) -> Self {
        ProofBody {
            epoch: p.leaf.epoch,
            campaign_id: p.leaf.campaign.to_string(),
            root: hex32(&p.root),
            leaf: format!("0x{}", hex::encode(p.leaf.encode())),
            leaf_index: p.leaf_index,
            proof: p.proof.iter().map(|h| hex32(h)).collect(),
            stats: StatsBody::from(&p.leaf.stats),
            reward_total: p.leaf.reward_total.to_string(),
        }
    }
}

/// One campaign's figures in a settled epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementEntryBody {
    pub tenant: String,
    pub campaign_id: String,
    pub stats: StatsBody,
    /// Cumulative reward up to and including the epoch.
    pub reward_total: String,
    /// Reward earned in the epoch.
    pub reward_delta: String,
}

/// A settled reward epoch.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementBody {
    pub epoch: u64,
    pub settled_at: String,
    pub entries: Vec<SettlementEntryBody>,
}

impl From<&Settlement> for SettlementBody {
    fn from(s: &Settlement) -> Self {
        SettlementBody {
            epoch: s.epoch,
            settled_at: s.settled_at.to_rfc3339(),
            entries: s
                .entries
                .iter()
                .map(|e| SettlementEntryBody {
                    tenant: e.tenant.to_string(),
                    campaign_id: e.campaign.to_string(),
                    stats: StatsBody::from(&e.stats),
                    reward_total: e.reward_total.to_string(),
                    reward_delta: e.reward_delta.to_string(),
                })
                .collect(),
        }
    }
}

fn path_epoch(epoch: &str) -> Result<u64, Problem> {
    match epoch.parse::<u64>() {
        Ok(0) => Err(Problem::bad_field("epoch", "epochs count from 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(Problem::bad_field("epoch", e.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/v1/anchors",
    tag = "ledger",
    operation_id = "listAnchors",
    responses((status = 200, description = "Every anchored epoch, oldest first", body = Anchors))
)]
/// The local ledger's entries (operators, `admin`).
pub async fn anchors(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let entries = run(&state, |s| async move {
        s.store.ledger_entries().await.map_err(problem::store)
    })
    .await?;
    Ok(ok(&Anchors {
        anchors: entries.iter().map(Anchor::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/anchors/{epoch}/proofs/{campaign}",
    tag = "ledger",
    operation_id = "getAnchorProof",
    params(ProofPath),
    responses((status = 200, description = "The campaign's leaf and inclusion proof", body = ProofBody))
)]
/// A campaign's Merkle proof in an anchored epoch (`read`: operators, or the campaign's
/// tenant; another tenant's campaign is 404 like an unknown one).
pub async fn proof(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (epoch, campaign) = path.into_inner();
    let epoch = path_epoch(&epoch)?;
    caller
        .0
        .require(Scope::Read)
        .map_err(|e| problem::denied(&e))?;
    let id = CampaignId::parse(campaign.trim())
        .map_err(|e| Problem::bad_field("campaign", e.to_string()))?;
    let body = run(&state, move |s| async move {
        let campaign = s
            .store
            .campaign(id)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| problem::campaign_not_found(id))?;
        if let Err(e) = caller.0.require_tenant(&campaign.tenant) {
            info!(campaign = %id, reason = %e, "campaign of another tenant answered as not found");
            return Err(problem::campaign_not_found(id));
        }
        let proof = s
            .store
            .proof(epoch, id)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| {
                Problem::not_found(format!(
                    "no proof of campaign {id} in epoch {epoch}: the epoch is not anchored yet, or the campaign had no figures then"
                ))
            })?;
        Ok(ProofBody::from_stored(&proof))
    })
    .await?;
    Ok(ok(&body))
}

#[utoipa::path(
    get,
    path = "/v1/settlements/{epoch}",
    tag = "ledger",
    operation_id = "getSettlement",
    params(EpochPath),
    responses((status = 200, description = "The settled epoch with every campaign's figures", body = SettlementBody))
)]
/// A settled epoch (operators, `admin`).
pub async fn settlement(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    operator(&caller.0, Scope::Admin)?;
    let epoch = path_epoch(&path.into_inner())?;
    let settlement = run(&state, move |s| async move {
        s.store
            .settlement(epoch)
            .await
            .map_err(problem::store)?
            .ok_or_else(|| Problem::not_found(format!("epoch {epoch} is not settled")))
    })
    .await?;
    Ok(ok(&SettlementBody::from(&settlement)))
}
