//! `maily.v1.CampaignService`: the unary calls, and conversions between the protos and
//! the domain. Uploads are in [`super::upload`].

use super::auth::{denied, principal};
use super::lifecycle::{self, EventStream};
use super::proto::{self, campaign_service_server::CampaignService};
use super::{status, upload};
use crate::auth::{Principal, Scope};
use crate::events::EventHub;
use crate::intake::{Command, Intake, NewCampaign};
use crate::quota::Quotas;
use maily_engine::ports::Store;
use maily_engine::template::Template;
use maily_engine::{Campaign, CampaignId, CampaignState, CampaignStats, TenantId};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

/// The implementation of `CampaignService` over intake and the store.
pub(crate) struct CampaignApi {
    pub(super) intake: Arc<Intake>,
    pub(super) store: Arc<dyn Store>,
    /// The event feed `StreamEvents` subscribes to.
    pub(super) events: Arc<EventHub>,
    /// What each tenant may hand in (uploaded rows and keyed sends).
    pub(super) quotas: Arc<Quotas>,
    /// Cloned into each upload task; see [`super::serve`].
    pub(super) uploads: mpsc::Sender<()>,
    /// Turns true when shutdown begins: event streams, which never end by themselves,
    /// end then so the server can drain.
    pub(super) closing: tokio::sync::watch::Receiver<bool>,
}

impl CampaignApi {
    pub(crate) fn new(
        intake: Arc<Intake>,
        store: Arc<dyn Store>,
        events: Arc<EventHub>,
        quotas: Arc<Quotas>,
        uploads: mpsc::Sender<()>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        CampaignApi {
            intake,
            store,
            events,
            quotas,
            uploads,
            closing,
        }
    }

    /// The tenant a campaign is created for: the caller's own, or for an operator the
    /// one the request names (which must exist).
    async fn tenant_for(&self, caller: &Principal, requested: &str) -> Result<TenantId, Status> {
        let requested = requested.trim();
        let tenant = if requested.is_empty() {
            caller.tenant.clone().ok_or_else(|| {
                status::bad_request("tenant", "operators must name the tenant to act for")
            })?
        } else {
            TenantId::parse(requested).map_err(|e| status::bad_request("tenant", e.to_string()))?
        };
        caller.authorize(Scope::Send, &tenant).map_err(denied)?;
        if caller.is_operator()
            && self
                .store
                .tenant(&tenant)
                .await
                .map_err(status::store)?
                .is_none()
        {
            return Err(status::bad_request("tenant", "no such tenant"));
        }
        Ok(tenant)
    }
}

/// The campaign `id` names, if `caller` may act on it with `scope`.
///
/// The scope is checked first, so a caller without it learns nothing about the id. A
/// campaign of another tenant is [`status::campaign_not_found`], like an unknown one.
pub(super) async fn campaign_for(
    store: &dyn Store,
    caller: &Principal,
    scope: Scope,
    id: &str,
) -> Result<Campaign, Status> {
    caller.require(scope).map_err(denied)?;
    let id = parse_campaign_id(id)?;
    match store.campaign(id).await.map_err(status::store)? {
        Some(campaign) => match caller.require_tenant(&campaign.tenant) {
            Ok(()) => Ok(campaign),
            Err(e) => {
                info!(campaign = %id, reason = %e, "campaign of another tenant answered as not found");
                Err(status::campaign_not_found(id))
            }
        },
        None => Err(status::campaign_not_found(id)),
    }
}

/// Parses a `campaign_id` field.
pub(super) fn parse_campaign_id(id: &str) -> Result<CampaignId, Status> {
    let id = id.trim();
    if id.is_empty() {
        return Err(status::bad_request("campaign_id", "is required"));
    }
    CampaignId::parse(id).map_err(|e| status::bad_request("campaign_id", e.to_string()))
}

#[tonic::async_trait]
impl CampaignService for CampaignApi {
    async fn create_campaign(
        &self,
        request: Request<proto::CreateCampaignRequest>,
    ) -> Result<Response<proto::CreateCampaignResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Scope::Send).map_err(denied)?;
        let req = request.into_inner();
        let tenant = self.tenant_for(&caller, &req.tenant).await?;
        let template = req
            .template
            .ok_or_else(|| status::bad_request("template", "is required"))?;
        let campaign = self
            .intake
            .create_campaign(NewCampaign {
                tenant,
                name: req.name,
                from: req.from,
                from_name: req.from_name,
                template: Template {
                    subject: template.subject,
                    text: template.text,
                    html: template.html,
                },
            })
            .await
            .map_err(status::intake)?;
        info!(
            campaign = %campaign.id,
            tenant = %campaign.tenant,
            caller = %caller.subject,
            "campaign created"
        );
        let state = self
            .intake
            .state(campaign.id)
            .await
            .map_err(status::intake)?;
        Ok(Response::new(proto::CreateCampaignResponse {
            campaign: Some(campaign_proto(&campaign, Some(&state))),
        }))
    }

    async fn get_campaign(
        &self,
        request: Request<proto::GetCampaignRequest>,
    ) -> Result<Response<proto::GetCampaignResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        let campaign = campaign_for(self.store.as_ref(), &caller, Scope::Read, id).await?;
        let state = self
            .intake
            .state(campaign.id)
            .await
            .map_err(status::intake)?;
        Ok(Response::new(proto::GetCampaignResponse {
            campaign: Some(campaign_proto(&campaign, Some(&state))),
        }))
    }

    async fn update_campaign(
        &self,
        request: Request<proto::UpdateCampaignRequest>,
    ) -> Result<Response<proto::UpdateCampaignResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let campaign =
            campaign_for(self.store.as_ref(), &caller, Scope::Send, &req.campaign_id).await?;
        let template = req
            .template
            .ok_or_else(|| status::bad_request("template", "is required"))?;
        let updated = self
            .intake
            .update_campaign(
                campaign.id,
                NewCampaign {
                    tenant: campaign.tenant,
                    name: req.name,
                    from: req.from,
                    from_name: req.from_name,
                    template: Template {
                        subject: template.subject,
                        text: template.text,
                        html: template.html,
                    },
                },
            )
            .await
            .map_err(status::intake)?;
        let state = self
            .intake
            .state(updated.id)
            .await
            .map_err(status::intake)?;
        info!(campaign = %updated.id, caller = %caller.subject, "campaign updated");
        Ok(Response::new(proto::UpdateCampaignResponse {
            campaign: Some(campaign_proto(&updated, Some(&state))),
        }))
    }

    async fn schedule_campaign(
        &self,
        request: Request<proto::ScheduleCampaignRequest>,
    ) -> Result<Response<proto::CampaignStateResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let at = lifecycle::schedule_time(req.start_at)?;
        let reply =
            lifecycle::control(self, &caller, &req.campaign_id, Command::Schedule(at)).await?;
        Ok(Response::new(reply))
    }

    async fn start_campaign(
        &self,
        request: Request<proto::CampaignCommandRequest>,
    ) -> Result<Response<proto::CampaignStateResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        Ok(Response::new(
            lifecycle::control(self, &caller, id, Command::Start).await?,
        ))
    }

    async fn pause_campaign(
        &self,
        request: Request<proto::CampaignCommandRequest>,
    ) -> Result<Response<proto::CampaignStateResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        Ok(Response::new(
            lifecycle::control(self, &caller, id, Command::Pause).await?,
        ))
    }

    async fn resume_campaign(
        &self,
        request: Request<proto::CampaignCommandRequest>,
    ) -> Result<Response<proto::CampaignStateResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        Ok(Response::new(
            lifecycle::control(self, &caller, id, Command::Resume).await?,
        ))
    }

    async fn cancel_campaign(
        &self,
        request: Request<proto::CampaignCommandRequest>,
    ) -> Result<Response<proto::CampaignStateResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        Ok(Response::new(
            lifecycle::control(self, &caller, id, Command::Cancel).await?,
        ))
    }

    async fn send_messages(
        &self,
        request: Request<proto::SendMessagesRequest>,
    ) -> Result<Response<proto::SendMessagesResponse>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(
            lifecycle::send(self, &caller, request.into_inner()).await?,
        ))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(
            lifecycle::stream_events(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn get_anchor_proof(
        &self,
        request: Request<proto::GetAnchorProofRequest>,
    ) -> Result<Response<proto::GetAnchorProofResponse>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(
            lifecycle::anchor_proof(self, &caller, request.into_inner()).await?,
        ))
    }

    async fn upload_recipients(
        &self,
        request: Request<Streaming<proto::UploadRecipientsRequest>>,
    ) -> Result<Response<proto::UploadRecipientsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Scope::Send).map_err(denied)?;
        let reply = upload::run(self, caller, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn get_campaign_stats(
        &self,
        request: Request<proto::GetCampaignStatsRequest>,
    ) -> Result<Response<proto::GetCampaignStatsResponse>, Status> {
        let caller = principal(&request)?;
        let id = &request.get_ref().campaign_id;
        let campaign = campaign_for(self.store.as_ref(), &caller, Scope::Read, id).await?;
        // No committed stats yet: nothing has been counted.
        let stats = self
            .store
            .campaign_stats(campaign.id)
            .await
            .map_err(status::store)?
            .unwrap_or_default();
        let reasons = self
            .store
            .bounce_reasons(campaign.id)
            .await
            .map_err(status::store)?;
        Ok(Response::new(proto::GetCampaignStatsResponse {
            campaign_id: campaign.id.to_string(),
            stats: Some(stats_proto(&stats)),
            bounces_by_reason: reasons
                .into_iter()
                .map(|r| proto::BounceReason {
                    class: if r.hard { "hard" } else { "soft" }.to_string(),
                    reason: r.reason,
                    count: r.count,
                })
                .collect(),
        }))
    }
}

fn campaign_proto(c: &Campaign, state: Option<&CampaignState>) -> proto::Campaign {
    proto::Campaign {
        id: c.id.to_string(),
        tenant: c.tenant.to_string(),
        name: c.name.clone(),
        from: c.from.to_string(),
        from_name: c.from_name.clone(),
        template: Some(proto::Template {
            subject: c.template.subject.clone(),
            text: c.template.text.clone(),
            html: c.template.html.clone(),
        }),
        status: state
            .map_or(proto::CampaignStatus::Unspecified, |s| {
                lifecycle::status_proto(s.status)
            })
            .into(),
        scheduled_at: state
            .and_then(|s| s.scheduled_at)
            .map(lifecycle::timestamp_proto),
    }
}

pub(super) fn stats_proto(s: &CampaignStats) -> proto::CampaignStats {
    proto::CampaignStats {
        injected: s.injected,
        delivered: s.delivered,
        deferred: s.deferred,
        bounced_hard: s.bounced_hard,
        bounced_soft: s.bounced_soft,
        expired: s.expired,
        opened: s.opened,
        clicked: s.clicked,
        unsubscribed: s.unsubscribed,
        complained: s.complained,
        rejected: s.rejected,
        suppressed: s.suppressed,
        finished: s.finished(),
    }
}
