//! A tenant's campaigns: create, read, update, the life-cycle commands, committed
//! stats, and recipients (a JSON array, or a streamed CSV, staged until the campaign
//! runs).

use super::access::tenant_for;
use super::extract::{Caller, Json, Query, is_csv, is_json};
use super::import::{self, ImportReport, RecipientSink};
use super::problem::{self, Problem, ProblemBody};
use super::{State, json, ok, run};
use crate::auth::{Principal, Scope};
use crate::intake::{CHUNK, Command, NewCampaign, Row};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maily_engine::template::Template;
use maily_engine::{
    Campaign, CampaignId, CampaignState, CampaignStats, CampaignStatus, ReasonCount, TenantId,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::info;
use utoipa::{IntoParams, ToSchema};

/// The largest JSON recipient array accepted; larger uploads go as streamed CSV.
pub const MAX_RECIPIENTS_JSON_BYTES: usize = 8 * 1024 * 1024;
/// The largest CSV recipient upload accepted.
pub const MAX_RECIPIENTS_CSV_BYTES: usize = 1024 * 1024 * 1024;

/// `{tenant}` and `{campaign}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct CampaignPath {
    /// The tenant's id.
    pub tenant: String,
    /// The campaign's id (a UUID).
    pub campaign: String,
}

/// A message template (minijinja, strict: every variable must be given).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    pub subject: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

/// A campaign's contents, to create it or replace them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// 1-200 characters.
    pub name: String,
    /// The sender address.
    pub from: String,
    /// The sender's display name.
    #[serde(default)]
    pub from_name: Option<String>,
    pub template: TemplateBody,
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    Draft,
    Scheduled,
    Running,
    Paused,
    Cancelled,
}

impl From<CampaignStatus> for StatusName {
    fn from(s: CampaignStatus) -> Self {
        match s {
            CampaignStatus::Draft => StatusName::Draft,
            CampaignStatus::Scheduled => StatusName::Scheduled,
            CampaignStatus::Running => StatusName::Running,
            CampaignStatus::Paused => StatusName::Paused,
            CampaignStatus::Cancelled => StatusName::Cancelled,
        }
    }
}

/// A campaign with its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignBody {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub from: String,
    pub from_name: Option<String>,
    pub template: TemplateBody,
    pub status: StatusName,
    /// When a scheduled campaign starts (RFC 3339).
    pub scheduled_at: Option<String>,
    /// When the status last changed (RFC 3339).
    pub updated_at: String,
}

fn campaign_body(c: &Campaign, state: &CampaignState) -> CampaignBody {
    CampaignBody {
        id: c.id.to_string(),
        tenant: c.tenant.to_string(),
        name: c.name.clone(),
        from: c.from.to_string(),
        from_name: c.from_name.clone(),
        template: TemplateBody {
            subject: c.template.subject.clone(),
            text: c.template.text.clone(),
            html: c.template.html.clone(),
        },
        status: state.status.into(),
        scheduled_at: state.scheduled_at.map(Timestamp::to_rfc3339),
        updated_at: state.updated_at.to_rfc3339(),
    }
}

/// A tenant's campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignBody>,
}

/// Filters of the campaign list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only campaigns in this status.
    pub status: Option<StatusName>,
}

/// When a campaign starts by itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// RFC 3339, in the future.
    #[schema(example = "2030-01-31T09:00:00Z")]
    pub start_at: String,
}

/// A campaign's status after a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateBody {
    pub campaign_id: String,
    pub status: StatusName,
    pub scheduled_at: Option<String>,
    pub updated_at: String,
}

/// A campaign's committed counters, as `GetCampaignStats` of the gRPC API reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    pub injected: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub expired: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    pub complained: u64,
    pub rejected: u64,
    pub suppressed: u64,
    /// Messages in a final state: delivered, bounced, expired, rejected or suppressed.
    pub finished: u64,
}

impl From<&CampaignStats> for StatsBody {
    fn from(s: &CampaignStats) -> Self {
        StatsBody {
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
}

/// A campaign's stats.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignStatsBody {
    pub campaign_id: String,
    pub stats: StatsBody,
    /// Bounced messages by reason and class, most frequent first; together they make
    /// `bounced_hard` and `bounced_soft` (read a moment apart, so a flush in between
    /// may show here first).
    pub bounces_by_reason: Vec<BounceReasonBody>,
}

/// How many messages bounced for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BounceReasonBody {
    /// In Sisimai's vocabulary: `userunknown`, `mailboxfull`, `blocked`...
    #[schema(example = "userunknown")]
    pub reason: String,
    /// `hard` or `soft`.
    #[schema(example = "hard")]
    pub class: String,
    pub count: u64,
}

impl From<&ReasonCount> for BounceReasonBody {
    fn from(r: &ReasonCount) -> Self {
        BounceReasonBody {
            reason: r.reason.clone(),
            class: if r.hard { "hard" } else { "soft" }.to_string(),
            count: r.count,
        }
    }
}

/// One recipient of a JSON upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    pub email: String,
    /// The template's variables for this recipient.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// The campaign `id` of `tenant`, if `caller` may act on it with `scope`. A campaign of
/// another tenant is 404, exactly like an unknown one.
pub(super) async fn campaign_of(
    s: &State,
    caller: &Principal,
    scope: Scope,
    tenant: &str,
    id: &str,
) -> Result<Campaign, Problem> {
    let tenant = tenant_for(s, caller, scope, tenant).await?;
    let id = CampaignId::parse(id).map_err(|e| Problem::bad_field("campaign", e.to_string()))?;
    match s.store.campaign(id).await.map_err(problem::store)? {
        Some(c) if c.tenant == tenant => Ok(c),
        Some(c) => {
            info!(campaign = %id, owner = %c.tenant, named = %tenant,
                "campaign of another tenant answered as not found");
            Err(problem::campaign_not_found(id))
        }
        None => Err(problem::campaign_not_found(id)),
    }
}

fn new_campaign(tenant: TenantId, input: CampaignInput) -> NewCampaign {
    NewCampaign {
        tenant,
        name: input.name,
        from: input.from,
        from_name: input.from_name,
        template: Template {
            subject: input.template.subject,
            text: input.template.text,
            html: input.template.html,
        },
    }
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/campaigns",
    tag = "campaigns",
    operation_id = "createCampaign",
    params(super::tenants::TenantPath),
    request_body = CampaignInput,
    responses((status = 201, description = "Created, as a draft", body = CampaignBody))
)]
/// Creates a campaign (`send`).
pub async fn create(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<CampaignInput>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let input = body.into_inner();
    let created = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Send, &tenant).await?;
        let campaign = s
            .intake
            .create_campaign(new_campaign(tenant, input))
            .await
            .map_err(problem::intake)?;
        let state = s.intake.state(campaign.id).await.map_err(problem::intake)?;
        info!(campaign = %campaign.id, tenant = %campaign.tenant, caller = %caller.0.subject,
            "campaign created");
        Ok(campaign_body(&campaign, &state))
    })
    .await?;
    Ok(json(StatusCode::CREATED, &created))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/campaigns",
    tag = "campaigns",
    operation_id = "listCampaigns",
    params(super::tenants::TenantPath, ListQuery),
    responses((status = 200, description = "The tenant's campaigns, oldest first", body = CampaignList))
)]
/// Lists the tenant's campaigns (`read`).
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<String>,
    query: Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let tenant = path.into_inner();
    let wanted = query.0.status;
    let campaigns = run(&state, move |s| async move {
        let tenant = tenant_for(&s, &caller.0, Scope::Read, &tenant).await?;
        s.store.campaigns(&tenant).await.map_err(problem::store)
    })
    .await?;
    let campaigns = campaigns
        .iter()
        .filter(|(_, st)| wanted.is_none_or(|w| StatusName::from(st.status) == w))
        .map(|(c, st)| campaign_body(c, st))
        .collect();
    Ok(ok(&CampaignList { campaigns }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/campaigns/{campaign}",
    tag = "campaigns",
    operation_id = "getCampaign",
    params(CampaignPath),
    responses((status = 200, description = "The campaign", body = CampaignBody))
)]
/// One campaign (`read`).
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let body = run(&state, move |s| async move {
        let c = campaign_of(&s, &caller.0, Scope::Read, &tenant, &id).await?;
        let state = s.intake.state(c.id).await.map_err(problem::intake)?;
        Ok(campaign_body(&c, &state))
    })
    .await?;
    Ok(ok(&body))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/campaigns/{campaign}",
    tag = "campaigns",
    operation_id = "updateCampaign",
    params(CampaignPath),
    request_body = CampaignInput,
    responses(
        (status = 200, description = "The campaign with its new contents", body = CampaignBody),
        (status = 409, description = "The campaign is cancelled", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// Replaces a campaign's name, sender and template (`send`; not once cancelled).
pub async fn update(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<CampaignInput>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let input = body.into_inner();
    let body = run(&state, move |s| async move {
        let c = campaign_of(&s, &caller.0, Scope::Send, &tenant, &id).await?;
        let updated = s
            .intake
            .update_campaign(c.id, new_campaign(c.tenant, input))
            .await
            .map_err(problem::intake)?;
        let state = s.intake.state(updated.id).await.map_err(problem::intake)?;
        info!(campaign = %updated.id, caller = %caller.0.subject, "campaign updated");
        Ok(campaign_body(&updated, &state))
    })
    .await?;
    Ok(ok(&body))
}

/// Applies a status command to a campaign the caller may send with.
async fn control(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    command: Command,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let body = run(&state, move |s| async move {
        let c = campaign_of(&s, &caller.0, Scope::Send, &tenant, &id).await?;
        let state = s
            .intake
            .control(c.id, command, Timestamp::now())
            .await
            .map_err(problem::intake)?;
        info!(campaign = %c.id, caller = %caller.0.subject, action = command.action(),
            "campaign command");
        Ok(StateBody {
            campaign_id: c.id.to_string(),
            status: state.status.into(),
            scheduled_at: state.scheduled_at.map(Timestamp::to_rfc3339),
            updated_at: state.updated_at.to_rfc3339(),
        })
    })
    .await?;
    Ok(ok(&body))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/campaigns/{campaign}/schedule",
    tag = "campaigns",
    operation_id = "scheduleCampaign",
    params(CampaignPath),
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "Scheduled", body = StateBody),
        (status = 409, description = "Only a draft or scheduled campaign can be scheduled", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// Schedules a draft campaign, or moves its schedule (`send`).
pub async fn schedule(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: Json<ScheduleBody>,
) -> Result<HttpResponse, Problem> {
    let at = Timestamp::parse_rfc3339(body.0.start_at.trim())
        .map_err(|e| Problem::invalid("start_at", format!("not an RFC 3339 time: {e}")))?;
    control(state, caller, path, Command::Schedule(at)).await
}

macro_rules! command {
    ($name:ident, $command:expr, $verb:literal, $id:literal, $allowed:literal, $doc:literal) => {
        #[utoipa::path(
            post,
            path = concat!("/v1/tenants/{tenant}/campaigns/{campaign}/", $verb),
            tag = "campaigns",
            operation_id = $id,
            params(CampaignPath),
            responses(
                (status = 200, description = "The campaign's new status", body = StateBody),
                (status = 409, description = $allowed, body = ProblemBody, content_type = "application/problem+json"),
            )
        )]
        #[doc = $doc]
        pub async fn $name(
            state: web::Data<State>,
            caller: Caller,
            path: web::Path<(String, String)>,
        ) -> Result<HttpResponse, Problem> {
            control(state, caller, path, $command).await
        }
    };
}

command!(
    start,
    Command::Start,
    "start",
    "startCampaign",
    "Only a draft or scheduled campaign can start",
    "Starts a campaign now (`send`)."
);
command!(
    pause,
    Command::Pause,
    "pause",
    "pauseCampaign",
    "Only a running campaign can be paused",
    "Holds a running campaign's messages (`send`)."
);
command!(
    resume,
    Command::Resume,
    "resume",
    "resumeCampaign",
    "Only a paused campaign can resume",
    "Sends a paused campaign's messages again (`send`)."
);
command!(
    cancel,
    Command::Cancel,
    "cancel",
    "cancelCampaign",
    "A cancelled campaign stays cancelled",
    "Stops a campaign for good and drops its staged recipients (`send`)."
);

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/campaigns/{campaign}/stats",
    tag = "campaigns",
    operation_id = "getCampaignStats",
    params(CampaignPath),
    responses((status = 200, description = "Committed counters (zeros before anything was counted)", body = CampaignStatsBody))
)]
/// A campaign's committed stats (`read`), the figures gRPC's `GetCampaignStats` gives.
pub async fn stats(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let body = run(&state, move |s| async move {
        let c = campaign_of(&s, &caller.0, Scope::Read, &tenant, &id).await?;
        let stats = s
            .store
            .campaign_stats(c.id)
            .await
            .map_err(problem::store)?
            .unwrap_or_default();
        let reasons = s.store.bounce_reasons(c.id).await.map_err(problem::store)?;
        Ok(CampaignStatsBody {
            campaign_id: c.id.to_string(),
            stats: StatsBody::from(&stats),
            bounces_by_reason: reasons.iter().map(BounceReasonBody::from).collect(),
        })
    })
    .await?;
    Ok(ok(&body))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/campaigns/{campaign}/recipients",
    tag = "campaigns",
    operation_id = "addRecipients",
    params(CampaignPath),
    request_body(
        description = "A JSON array of recipients (at most 8 MiB), or a CSV (streamed, at most 1 GiB) whose header row is `email` followed by the template's variable names; an empty cell is an empty variable",
        content(
            (Vec<RecipientInput> = "application/json"),
            (String = "text/csv", example = "email,first_name\nann@example.org,Ann\n"),
        )
    ),
    responses(
        (status = 200, description = "What was staged and which rows were refused", body = ImportReport),
        (status = 409, description = "The campaign is cancelled", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
/// Stages recipients for a campaign (`send`); they are sent once it runs. Each row is
/// checked on its own: refused rows are listed by number, the rest are staged.
pub async fn recipients(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    if is_csv(&req) {
        let campaign = run(&state, move |s| async move {
            let c = campaign_of(&s, &caller.0, Scope::Send, &tenant, &id).await?;
            // Refuse before reading the body: nothing is staged for a cancelled one.
            s.intake
                .state(c.id)
                .await
                .map_err(problem::intake)
                .and_then(|st| {
                    if st.status == CampaignStatus::Cancelled {
                        Err(problem::intake(crate::intake::IntakeError::WrongStatus {
                            campaign: c.id,
                            status: st.status,
                            action: "add recipients to",
                            allowed: "not cancelled".into(),
                        }))
                    } else {
                        Ok(())
                    }
                })?;
            Ok(c)
        })
        .await?;
        let id = campaign.id;
        let sink = RecipientSink::new(campaign);
        let report = import::csv(&state, &req, payload, sink, MAX_RECIPIENTS_CSV_BYTES).await?;
        info!(campaign = %id, rows = report.rows, accepted = report.accepted,
            rejected = report.rejected, "recipients uploaded (csv)");
        return Ok(ok(&report));
    }
    if !is_json(&req) {
        return Err(Problem::unsupported_media_type(
            "application/json (an array) or text/csv",
        ));
    }
    let rows: Json<Vec<RecipientInput>, MAX_RECIPIENTS_JSON_BYTES> =
        Json::from_payload(&req, payload).await?;
    let rows: Vec<Row> = rows
        .into_inner()
        .into_iter()
        .map(|r| Row {
            email: r.email,
            vars: r.vars,
        })
        .collect();
    let report = run(&state, move |s| async move {
        let c = campaign_of(&s, &caller.0, Scope::Send, &tenant, &id).await?;
        let mut report = ImportReport::default();
        let mut rows = rows.into_iter().peekable();
        let mut first = 1u64;
        while rows.peek().is_some() {
            let chunk: Vec<Row> = rows.by_ref().take(CHUNK).collect();
            let n = chunk.len() as u64;
            // Over its quota (shared with gRPC), the tenant's upload waits here.
            s.quotas.wait(&c.tenant, n as u32).await;
            let staged = s
                .intake
                .stage_from(&c, first, chunk)
                .await
                .map_err(|e| problem::intake(e).with_import(report.to_json()))?;
            report.rows += n;
            report.accepted += staged.accepted;
            for e in staged.rejected {
                report.reject(e.row, None, e.input, e.reason);
            }
            first += n;
        }
        info!(campaign = %c.id, rows = report.rows, accepted = report.accepted,
            rejected = report.rejected, caller = %caller.0.subject, "recipients uploaded (json)");
        Ok(report)
    })
    .await?;
    Ok(ok(&report))
}
