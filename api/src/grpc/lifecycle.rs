//! The parts of `CampaignService` beyond creating and reading: status commands,
//! keyed single sends, the event stream and anchor proofs. [`super::campaigns`]
//! routes the calls here.

use super::auth::denied;
use super::campaigns::{CampaignApi, campaign_for, stats_proto};
use super::proto;
use super::status;
use crate::auth::{Principal, Scope};
use crate::events::{EventFilter, FeedError};
use crate::intake::{Command, KeyedMessage, MAX_BATCH, SendOutcome};
use maily_engine::records::EventRecord;
use maily_engine::{CampaignState, CampaignStatus, EventKind, Timestamp};
use std::pin::Pin;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::info;

/// The server stream of `StreamEvents`.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

/// Applies a status command to a campaign the caller may send with.
pub(super) async fn control(
    api: &CampaignApi,
    caller: &Principal,
    campaign_id: &str,
    command: Command,
) -> Result<proto::CampaignStateResponse, Status> {
    let campaign = campaign_for(api.store.as_ref(), caller, Scope::Send, campaign_id).await?;
    let state = api
        .intake
        .control(campaign.id, command, Timestamp::now())
        .await
        .map_err(status::intake)?;
    info!(campaign = %campaign.id, caller = %caller.subject, action = command.action(), "campaign command");
    Ok(state_proto(&campaign.id.to_string(), &state))
}

/// `start_at` of a schedule request, as a time in the future.
pub(super) fn schedule_time(at: Option<prost_types::Timestamp>) -> Result<Timestamp, Status> {
    let at = at.ok_or_else(|| status::bad_request("start_at", "is required"))?;
    if !(0..1_000_000_000).contains(&at.nanos) {
        return Err(status::bad_request("start_at", "nanos out of range"));
    }
    let ms = at
        .seconds
        .checked_mul(1000)
        .and_then(|s| s.checked_add(i64::from(at.nanos / 1_000_000)))
        .ok_or_else(|| status::bad_request("start_at", "out of range"))?;
    Ok(Timestamp(ms))
}

pub(super) fn timestamp_proto(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1000),
        nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn status_proto(s: CampaignStatus) -> proto::CampaignStatus {
    match s {
        CampaignStatus::Draft => proto::CampaignStatus::Draft,
        CampaignStatus::Scheduled => proto::CampaignStatus::Scheduled,
        CampaignStatus::Running => proto::CampaignStatus::Running,
        CampaignStatus::Paused => proto::CampaignStatus::Paused,
        CampaignStatus::Cancelled => proto::CampaignStatus::Cancelled,
    }
}

pub(super) fn state_proto(id: &str, s: &CampaignState) -> proto::CampaignStateResponse {
    proto::CampaignStateResponse {
        campaign_id: id.to_string(),
        status: status_proto(s.status).into(),
        scheduled_at: s.scheduled_at.map(timestamp_proto),
    }
}

/// `SendMessages`.
pub(super) async fn send(
    api: &CampaignApi,
    caller: &Principal,
    req: proto::SendMessagesRequest,
) -> Result<proto::SendMessagesResponse, Status> {
    let campaign = campaign_for(api.store.as_ref(), caller, Scope::Send, &req.campaign_id).await?;
    // A batch intake refuses for its size costs nothing.
    if req.messages.len() <= MAX_BATCH {
        let n = req.messages.len() as u32;
        api.quotas
            .admit(&campaign.tenant, n, Instant::now())
            .map_err(status::exhausted)?;
    }
    let keys: Vec<String> = req
        .messages
        .iter()
        .map(|m| m.idempotency_key.clone())
        .collect();
    let messages = req
        .messages
        .into_iter()
        .map(|m| KeyedMessage {
            key: m.idempotency_key,
            email: m.email,
            vars: m.variables,
        })
        .collect();
    let outcomes = api
        .intake
        .send_keyed(&campaign, messages)
        .await
        .map_err(status::intake)?;
    let results = keys
        .into_iter()
        .zip(outcomes)
        .map(|(key, o)| {
            let (outcome, message_id, reason) = match o {
                SendOutcome::Accepted { message_id } => (
                    proto::send_result::Outcome::Accepted,
                    message_id.to_string(),
                    String::new(),
                ),
                SendOutcome::Repeated { message_id } => (
                    proto::send_result::Outcome::Repeated,
                    message_id.to_string(),
                    String::new(),
                ),
                SendOutcome::Rejected { reason } => {
                    (proto::send_result::Outcome::Rejected, String::new(), reason)
                }
            };
            proto::SendResult {
                idempotency_key: key,
                outcome: outcome.into(),
                message_id,
                reason,
            }
        })
        .collect();
    Ok(proto::SendMessagesResponse { results })
}

/// `StreamEvents`: the caller's tenant's events (one campaign's, if named) from now on.
pub(super) async fn stream_events(
    api: &CampaignApi,
    caller: &Principal,
    req: proto::StreamEventsRequest,
) -> Result<EventStream, Status> {
    caller.require(Scope::Read).map_err(denied)?;
    let campaign = if req.campaign_id.trim().is_empty() {
        None
    } else {
        Some(
            campaign_for(api.store.as_ref(), caller, Scope::Read, &req.campaign_id)
                .await?
                .id,
        )
    };
    if caller.tenant.is_none() && campaign.is_none() {
        info!(caller = %caller.subject, "operator follows every tenant's events");
    }
    let mut sub = api.events.subscribe(EventFilter {
        tenant: caller.tenant.clone(),
        campaign,
    });
    let (tx, rx) = mpsc::channel(256);
    let mut closing = api.closing.clone();
    tokio::spawn(async move {
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        tokio::pin!(closed);
        loop {
            let next = tokio::select! {
                next = sub.next() => next,
                () = &mut closed => {
                    let _ = tx
                        .send(Err(Status::unavailable("the server is shutting down; subscribe again")))
                        .await;
                    return;
                }
            };
            let item = match next {
                Ok(e) => Ok(event_proto(&e)),
                Err(e @ FeedError::Lagged(_)) => Err(Status::aborted(e.to_string())),
                Err(FeedError::Closed) => Err(Status::unavailable("the event feed stopped")),
            };
            let end = item.is_err();
            // The caller went away: stop following.
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn event_proto(e: &EventRecord) -> proto::Event {
    let mut out = proto::Event {
        message_id: e.message_id.to_string(),
        campaign_id: e.campaign.to_string(),
        recipient: e.recipient.to_string(),
        at: Some(timestamp_proto(e.at)),
        kind: e.kind.name().to_string(),
        ..Default::default()
    };
    match &e.kind {
        EventKind::Deferred { reply, .. } => out.detail = reply.clone(),
        EventKind::Bounced {
            class,
            reason,
            status,
            reply,
        } => {
            out.detail = reply.clone();
            out.bounce_class = match class {
                maily_engine::BounceClass::Hard => "hard".into(),
                maily_engine::BounceClass::Soft => "soft".into(),
            };
            out.bounce_reason = reason.as_str().to_string();
            out.status = status.clone().unwrap_or_default();
        }
        EventKind::Clicked { url } => out.detail = url.clone(),
        EventKind::Rejected { reason } => out.detail = reason.clone(),
        _ => {}
    }
    out
}

/// `GetAnchorProof`.
pub(super) async fn anchor_proof(
    api: &CampaignApi,
    caller: &Principal,
    req: proto::GetAnchorProofRequest,
) -> Result<proto::GetAnchorProofResponse, Status> {
    let campaign = campaign_for(api.store.as_ref(), caller, Scope::Read, &req.campaign_id).await?;
    if req.epoch == 0 {
        return Err(status::bad_request("epoch", "epochs count from 1"));
    }
    let proof = api
        .store
        .proof(req.epoch, campaign.id)
        .await
        .map_err(status::store)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no proof of campaign {} in epoch {}: the epoch is not anchored yet, or the campaign had no figures then",
                campaign.id, req.epoch
            ))
        })?;
    Ok(proto::GetAnchorProofResponse {
        epoch: req.epoch,
        root: proof.root.to_vec(),
        leaf: proof.leaf.encode(),
        leaf_index: proof.leaf_index,
        proof: proof.proof.iter().map(|h| h.to_vec()).collect(),
        stats: Some(stats_proto(&proof.leaf.stats)),
        reward_total: proof.leaf.reward_total.to_string(),
    })
}
