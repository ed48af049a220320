//! The one mapping from intake, store and request errors to gRPC statuses.
//!
//! Callers are told what to fix (field violations for bad input, `UNAVAILABLE` for
//! outages they should retry); internal details go to the log, never to the caller.

use super::MAX_MESSAGE_BYTES;
use crate::intake::IntakeError;
use crate::quota::Exhausted;
use maily_engine::CampaignId;
use maily_engine::ports::StoreError;
use maily_engine::template::TemplateError;
use std::collections::HashMap;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{error, warn};

/// The `domain` of the `google.rpc.ErrorInfo` details Maily attaches.
pub(crate) const ERROR_DOMAIN: &str = "maily.dev";

/// `INVALID_ARGUMENT` naming one offending field (a `google.rpc.BadRequest`).
pub(crate) fn bad_request(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description.clone()),
    )
}

/// `NOT_FOUND` for a campaign that does not exist, or not for this caller.
pub(crate) fn campaign_not_found(id: CampaignId) -> Status {
    Status::not_found(format!("campaign {id} not found"))
}

/// The status of a failed intake call.
pub(crate) fn intake(e: IntakeError) -> Status {
    let text = e.to_string();
    match e {
        IntakeError::Name(reason) => bad_request("name", reason),
        IntakeError::From(e) => bad_request("from", format!("not a valid address: {e}")),
        IntakeError::FromNameLineBreak => bad_request("from_name", "holds a line break"),
        IntakeError::FromDomain { reason, .. } => bad_request("from", reason),
        IntakeError::Template(TemplateError::NoBody) => {
            bad_request("template", "needs a text or an HTML part")
        }
        IntakeError::Template(TemplateError::Syntax { part, message }) => {
            bad_request(template_field(part), format!("does not parse: {message}"))
        }
        IntakeError::Template(TemplateError::TooLarge { part, size, limit }) => bad_request(
            template_field(part),
            format!("is {size} bytes, over the limit of {limit}"),
        ),
        IntakeError::Template(TemplateError::Forbidden {
            part,
            construct,
            line,
            why,
        }) => bad_request(
            template_field(part),
            format!("uses {construct} on line {line}, which Maily templates do not allow: {why}"),
        ),
        IntakeError::UnknownCampaign(id) => campaign_not_found(id),
        IntakeError::WrongStatus {
            campaign, status, ..
        } => {
            let mut details = ErrorDetails::new();
            details.add_precondition_failure_violation(
                "STATUS",
                campaign.to_string(),
                format!("the campaign is {status}"),
            );
            Status::with_error_details(Code::FailedPrecondition, text, details)
        }
        IntakeError::ScheduleInPast(_) => bad_request("start_at", text),
        IntakeError::BatchTooLarge(_) => bad_request("messages", text),
        IntakeError::Store(e) => store(e),
        IntakeError::Log(e) => {
            warn!(error = %e, "send log refused records");
            Status::unavailable("the send log is unavailable; retry later")
        }
    }
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

/// The status of a failed store call.
pub(crate) fn store(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) => {
            warn!(error = %e, "store unavailable");
            Status::unavailable("storage is temporarily unavailable; retry later")
        }
        e => {
            error!(error = %e, "store call failed");
            Status::internal("internal error")
        }
    }
}

/// An upload's progress, attached to the error that ended it as a
/// `google.rpc.ErrorInfo` so a client knows what was kept.
pub(crate) struct Progress {
    pub campaign: Option<CampaignId>,
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
}

/// `status` with the upload's progress added to its message and details.
pub(crate) fn with_progress(status: Status, reason: &str, p: &Progress) -> Status {
    let mut details = status.get_error_details();
    let mut metadata = HashMap::from([
        ("rows".to_string(), p.rows.to_string()),
        ("accepted".to_string(), p.accepted.to_string()),
        ("rejected".to_string(), p.rejected.to_string()),
    ]);
    if let Some(id) = p.campaign {
        metadata.insert("campaign_id".to_string(), id.to_string());
    }
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    let message = if p.rows == 0 {
        status.message().to_string()
    } else {
        format!(
            "{} (upload stopped after {} rows: {} accepted and kept, {} refused)",
            status.message(),
            p.rows,
            p.accepted,
            p.rejected
        )
    };
    Status::with_error_details(status.code(), message, details)
}

/// A tenant over its API quota: `RESOURCE_EXHAUSTED` with a `QuotaFailure` naming the
/// tenant and a `RetryInfo` saying when the same request would be admitted.
pub(crate) fn exhausted(e: Exhausted) -> Status {
    let mut details = ErrorDetails::new();
    details.add_quota_failure_violation(
        format!("tenant:{}", e.tenant),
        format!(
            "at most {} messages handed in, bursts of {}",
            e.rate, e.burst
        ),
    );
    details.set_retry_info(Some(e.retry_after));
    Status::with_error_details(Code::ResourceExhausted, e.to_string(), details)
}

/// Whether `status` is tonic's refusal of a message above the decoding limit.
pub(crate) fn is_oversized(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

/// The status for a message above [`MAX_MESSAGE_BYTES`]: `RESOURCE_EXHAUSTED`, as the
/// gRPC status code list specifies, with what to do about it.
pub(crate) fn oversized(tonic_message: &str) -> Status {
    Status::resource_exhausted(format!(
        "request message exceeds the {MAX_MESSAGE_BYTES}-byte limit ({tonic_message}); \
         send fewer recipients per message or a smaller template"
    ))
}

/// Replaces tonic's `OUT_OF_RANGE` answer to an oversized unary request (a
/// trailers-only response) with [`oversized`]; other responses pass unchanged.
pub(crate) fn refine_oversized(response: http::Response<Body>) -> http::Response<Body> {
    match Status::from_header_map(response.headers()) {
        Some(status) if is_oversized(&status) => oversized(status.message()).into_http(),
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_errors_name_the_part() {
        let status = intake(IntakeError::Template(TemplateError::Syntax {
            part: "HTML part",
            message: "unexpected end".into(),
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("field violations");
        assert_eq!(bad.field_violations[0].field, "template.html");
        assert!(
            status
                .message()
                .starts_with("template.html: does not parse")
        );
    }

    #[test]
    fn oversized_unary_answers_become_resource_exhausted() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        assert!(is_oversized(&tonic));
        let refined = refine_oversized(tonic.into_http());
        let status = Status::from_header_map(refined.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("4194304-byte limit"),
            "{status:?}"
        );
        let other = Status::out_of_range("page 9 of 3").into_http();
        let status = Status::from_header_map(refine_oversized(other).headers()).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
    }
}
