//! The one mapping from errors to HTTP answers: RFC 9457 problem details
//! (`application/problem+json`).
//!
//! | status | `type` (after [`TYPE_BASE`]) | when |
//! |---|---|---|
//! | 400 | `bad-request` | the body is not JSON, or does not deserialise (unknown field, wrong type, missing field), or a path or query parameter is malformed; `errors` names each field |
//! | 401 | `unauthenticated` | no, malformed, unknown, revoked or expired credentials (with `WWW-Authenticate: Bearer`) |
//! | 403 | `forbidden` | a scope is missing, another tenant is named, or an operator-only route |
//! | 404 | `not-found` | no such resource, or not of this tenant (answered exactly alike) |
//! | 405 | `method-not-allowed` | the path exists, the method does not |
//! | 409 | `conflict` | the campaign's status does not allow the command, or the resource exists |
//! | 413 | `payload-too-large` | the body is above the route's limit |
//! | 415 | `unsupported-media-type` | the body's `Content-Type` is not one the route reads |
//! | 422 | `validation` | the body deserialised, but a value is invalid (an address, a template, a filter, a time in the past); `errors` names each field |
//! | 500 | `internal` | a bug or corrupt data (details in the log only) |
//! | 503 | `unavailable` | the store, the event log or the identity provider cannot be reached; retry |
//!
//! The split between 400 and 422: 400 means the request does not have the shape the
//! route documents, 422 that it has the shape but a value is refused.

use crate::auth::{AuthError, Denied, Scope};
use crate::intake::IntakeError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use maily_engine::ports::StoreError;
use maily_engine::template::TemplateError;
use serde::Serialize;
use std::fmt;
use tracing::{error, info, warn};
use utoipa::ToSchema;

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Problem `type`s are this followed by the slug of the table above.
pub const TYPE_BASE: &str = "https://maily.dev/problems/";

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field: a JSON path in the body (`template.subject`, `emails[2]`), or the
    /// name of a path or query parameter (`tenant`, `limit`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An RFC 9457 problem, as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// A URI naming the kind of problem (see the API guide).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The offending fields (400 and 422).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The campaign's status when a command was refused (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_status: Option<String>,
    /// What a streamed import stored before it was stopped (413, 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<serde_json::Value>,
}

/// The kinds of problem, one per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Validation,
    Internal,
    Unavailable,
}

impl Kind {
    fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad-request",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::Conflict => "conflict",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::Validation => "validation",
            Kind::Internal => "internal",
            Kind::Unavailable => "unavailable",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::BadRequest => "Malformed request",
            Kind::Unauthenticated => "Authentication required",
            Kind::Forbidden => "Not allowed",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::Conflict => "Conflict",
            Kind::PayloadTooLarge => "Request body too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::Validation => "Invalid values",
            Kind::Internal => "Internal error",
            Kind::Unavailable => "Temporarily unavailable",
        }
    }
}

/// A refused request; every handler's error type (boxed: it travels in every
/// `Result` of the handlers).
#[derive(Debug, Clone)]
pub struct Problem(Box<Details>);

#[derive(Debug, Clone)]
struct Details {
    kind: Kind,
    detail: String,
    errors: Vec<FieldError>,
    /// `WWW-Authenticate` value (401, and 403 for a missing scope).
    challenge: Option<String>,
    campaign_status: Option<String>,
    import: Option<serde_json::Value>,
}

impl Problem {
    /// A problem of `kind` saying `detail`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Problem(Box::new(Details {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            challenge: None,
            campaign_status: None,
            import: None,
        }))
    }

    /// 400 for one malformed field or parameter.
    pub fn bad_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let (field, reason) = (field.into(), reason.into());
        Problem::new(Kind::BadRequest, format!("{field}: {reason}")).with_field(field, reason)
    }

    /// 422 for one invalid value.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let (field, reason) = (field.into(), reason.into());
        Problem::new(Kind::Validation, format!("{field}: {reason}")).with_field(field, reason)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(Kind::NotFound, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(Kind::Conflict, detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(Kind::Forbidden, detail)
    }

    /// 413 naming the limit.
    pub fn too_large(limit: usize) -> Self {
        Problem::new(
            Kind::PayloadTooLarge,
            format!("the request body exceeds this route's limit of {limit} bytes"),
        )
    }

    /// 415 naming what the route reads.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Problem::new(
            Kind::UnsupportedMediaType,
            format!("send the body as {expected}"),
        )
    }

    /// 503 saying what is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(Kind::Unavailable, detail)
    }

    /// 500; the cause is logged, never shown.
    pub fn internal(cause: impl fmt::Display) -> Self {
        error!(error = %cause, "admin request failed");
        Problem::new(Kind::Internal, "internal error")
    }

    /// Adds an offending field.
    pub fn with_field(mut self, field: impl Into<String>, reason: impl Into<String>) -> Self {
        self.0.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
        self
    }

    /// Adds what a streamed import stored before it stopped.
    pub fn with_import(mut self, report: serde_json::Value) -> Self {
        self.0.import = Some(report);
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    fn with_challenge(mut self, challenge: Option<String>) -> Self {
        self.0.challenge = challenge;
        self
    }

    /// The body answered.
    pub fn body(&self) -> ProblemBody {
        let d = &self.0;
        ProblemBody {
            kind: format!("{TYPE_BASE}{}", d.kind.slug()),
            title: d.kind.title().to_string(),
            status: d.kind.status().as_u16(),
            detail: d.detail.clone(),
            errors: d.errors.clone(),
            campaign_status: d.campaign_status.clone(),
            import: d.import.clone(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind.status(), self.0.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.0.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = HttpResponse::build(self.status_code());
        response
            .content_type(PROBLEM_JSON)
            .insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(challenge) = &self.0.challenge
            && let Ok(value) = HeaderValue::from_str(challenge)
        {
            response.insert_header((header::WWW_AUTHENTICATE, value));
        }
        response.body(body)
    }
}

/// 401 (or 503 when the store or identity provider is out) for a failed
/// authentication, logged with its precise reason.
pub fn unauthenticated(e: &AuthError) -> Problem {
    if e.is_unavailable() {
        warn!(error = %e, "admin request could not be authenticated");
        return Problem::unavailable(e.public_message());
    }
    info!(error = %e, "admin request not authenticated");
    let challenge = match e {
        // RFC 6750 3.1: no error code when no credentials were sent.
        AuthError::Missing => "Bearer realm=\"maily\"".to_string(),
        _ => format!(
            "Bearer realm=\"maily\", error=\"invalid_token\", error_description=\"{}\"",
            e.public_message()
        ),
    };
    Problem::new(Kind::Unauthenticated, e.public_message()).with_challenge(Some(challenge))
}

/// 403 for a refused authorisation, logged with its precise reason.
pub fn denied(e: &Denied) -> Problem {
    info!(reason = %e, "admin request not allowed");
    let challenge = match e {
        Denied::MissingScope { scope, .. } => Some(format!(
            "Bearer realm=\"maily\", error=\"insufficient_scope\", scope=\"{scope}\""
        )),
        Denied::OtherTenant { .. } => None,
    };
    Problem::forbidden(e.public_message()).with_challenge(challenge)
}

/// 403 for a route only operators (principals of no tenant) may use.
pub fn operators_only(scope: Scope) -> Problem {
    Problem::forbidden(format!(
        "only operators (with the {scope} scope and no tenant of their own) may do this"
    ))
}

/// The problem for a failed store call.
pub fn store(e: StoreError) -> Problem {
    match e {
        StoreError::Unavailable(_) => {
            warn!(error = %e, "store unavailable");
            Problem::unavailable("storage is temporarily unavailable; retry later")
        }
        StoreError::Conflict(reason) => Problem::conflict(reason),
        e => Problem::internal(e),
    }
}

/// The problem for a failed intake call.
pub fn intake(e: IntakeError) -> Problem {
    let text = e.to_string();
    match e {
        IntakeError::Name(reason) => Problem::invalid("name", reason),
        IntakeError::From(e) => Problem::invalid("from", format!("not a valid address: {e}")),
        IntakeError::FromNameLineBreak => Problem::invalid("from_name", "holds a line break"),
        IntakeError::FromDomain { reason, .. } => Problem::invalid("from", reason),
        IntakeError::Template(TemplateError::NoBody) => {
            Problem::invalid("template", "needs a text or an HTML part")
        }
        IntakeError::Template(TemplateError::Syntax { part, message }) => {
            Problem::invalid(template_field(part), format!("does not parse: {message}"))
        }
        IntakeError::Template(TemplateError::TooLarge { part, size, limit }) => Problem::invalid(
            template_field(part),
            format!("is {size} bytes, over the limit of {limit}"),
        ),
        IntakeError::Template(TemplateError::Forbidden {
            part,
            construct,
            line,
            why,
        }) => Problem::invalid(
            template_field(part),
            format!("uses {construct} on line {line}, which Maily templates do not allow: {why}"),
        ),
        IntakeError::UnknownCampaign(id) => campaign_not_found(id),
        IntakeError::WrongStatus { status, .. } => {
            let mut p = Problem::conflict(text);
            p.0.campaign_status = Some(status.to_string());
            p
        }
        IntakeError::ScheduleInPast(_) => Problem::invalid("start_at", text),
        IntakeError::BatchTooLarge(_) => Problem::invalid("messages", text),
        IntakeError::Store(e) => store(e),
        IntakeError::Log(e) => {
            warn!(error = %e, "send log refused records");
            Problem::unavailable("the send log is unavailable; retry later")
        }
    }
}

/// 404 for a campaign that does not exist, or not for this caller.
pub fn campaign_not_found(id: impl fmt::Display) -> Problem {
    Problem::not_found(format!("campaign {id} not found"))
}

/// The request field of a template part as [`TemplateError::Syntax`] names it.
fn template_field(part: &str) -> &'static str {
    match part {
        "subject" => "template.subject",
        "text part" => "template.text",
        "HTML part" => "template.html",
        _ => "template",
    }
}

/// The 404 answered for paths no route has.
pub async fn no_route() -> HttpResponse {
    Problem::not_found("no such route; GET /openapi.json lists them").error_response()
}

/// The 405 answered for a method a route's path does not have.
pub async fn method_not_allowed() -> HttpResponse {
    Problem::new(
        Kind::MethodNotAllowed,
        "this path does not take this method; GET /openapi.json lists them",
    )
    .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::{CampaignId, CampaignStatus};

    #[test]
    fn problems_carry_type_title_status_and_fields() {
        let p = Problem::bad_field("limit", "invalid digit found in string");
        let body = serde_json::to_value(p.body()).unwrap();
        assert_eq!(body["type"], "https://maily.dev/problems/bad-request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["errors"][0]["field"], "limit");
        assert!(body.get("campaign_status").is_none());
        let response = p.error_response();
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
    }

    #[test]
    fn wrong_status_is_a_conflict_naming_the_status() {
        let p = intake(IntakeError::WrongStatus {
            campaign: CampaignId::new(),
            status: CampaignStatus::Draft,
            action: "pause",
            allowed: "running".into(),
        });
        assert_eq!(p.status_code(), StatusCode::CONFLICT);
        assert_eq!(p.body().campaign_status.as_deref(), Some("draft"));
    }

    #[test]
    fn missing_credentials_challenge_without_an_error_code() {
        let p = unauthenticated(&AuthError::Missing);
        let response = p.error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"maily\""
        );
        let revoked = unauthenticated(&AuthError::Revoked {
            key_id: "k".into(),
            at: maily_engine::Timestamp(0),
        });
        let value = revoked.error_response();
        let value = value.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(value.to_str().unwrap().contains("invalid_token"));
    }
}
