//! `GET /healthz`, `GET /openapi.json`, and what the OpenAPI document says beyond the
//! handlers' own annotations: info, the bearer security scheme, the problem responses
//! every `/v1` operation can give, and the tags.

use super::ApiDoc;
use super::problem::{PROBLEM_JSON, ProblemBody};
use actix_web::HttpResponse;
use actix_web::http::header;
use std::sync::OnceLock;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, PathItem, Ref, RefOr};
use utoipa::{Modify, OpenApi as _, PartialSchema, ToSchema};

/// The name of the security scheme in the document.
pub const SECURITY_SCHEME: &str = "bearer";

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The admin API is up", body = String, content_type = "text/plain"))
)]
/// Whether the admin API is up; no credentials needed.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "This OpenAPI document", body = serde_json::Value))
)]
/// The OpenAPI document of this API; no credentials needed.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(document_json())
}

/// The OpenAPI document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

/// Completes the derived document.
pub struct Document;

/// Reusable problem responses: (component name, status, description).
const PROBLEMS: &[(&str, &str, &str)] = &[
    (
        "BadRequest",
        "400",
        "Malformed request: the body or a parameter does not have the documented shape",
    ),
    (
        "Unauthenticated",
        "401",
        "Missing, malformed, unknown, revoked or expired credentials",
    ),
    (
        "Forbidden",
        "403",
        "A scope is missing, another tenant is named, or only operators may do this",
    ),
    ("NotFound", "404", "No such resource, or not of this tenant"),
    (
        "PayloadTooLarge",
        "413",
        "The body is larger than the route accepts",
    ),
    (
        "UnsupportedMediaType",
        "415",
        "The body's Content-Type is not one the route reads",
    ),
    (
        "Unprocessable",
        "422",
        "The body has the documented shape but a value is invalid",
    ),
    ("Internal", "500", "Internal error"),
    (
        "Unavailable",
        "503",
        "The store, the event log or the identity provider is unavailable; retry",
    ),
];

impl Modify for Document {
    fn modify(&self, doc: &mut OpenApi) {
        doc.info.title = "Maily admin API".into();
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        doc.info.description = Some(
            "Tenants, API keys, campaigns, contacts, lists, segments, suppressions, \
             delivery limits, engine status, anchors and settlements. Every /v1 route \
             takes `Authorization: Bearer <API key or JWT>`; errors are RFC 9457 problems \
             (application/problem+json)."
                .into(),
        );
        doc.info.license = None;
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("Maily API key (mly_…) or JWT".into());
        bearer.description = Some(
            "An API key of a tenant, or a JWT (RS256 or ES256) from the configured \
             identity provider whose roles claim holds send, read or admin"
                .into(),
        );
        components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(bearer));
        let (name, schema) = (ProblemBody::name(), ProblemBody::schema());
        components.schemas.insert(name.to_string(), schema);
        for (name, _, description) in PROBLEMS {
            components
                .responses
                .insert(name.to_string(), RefOr::T(problem_response(description)));
        }
        doc.security = Some(vec![SecurityRequirement::new(
            SECURITY_SCHEME,
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            if path.starts_with("/v1/") {
                add_problems(item);
            }
        }
        doc.tags = Some(
            [
                (
                    "tenants",
                    "Tenants and their API keys (operators; a tenant's admins manage its keys)",
                ),
                (
                    "domains",
                    "Sending domains: a tenant sends only From its verified domains",
                ),
                (
                    "campaigns",
                    "Campaigns, their life-cycle commands, stats and recipients",
                ),
                ("contacts", "Contacts and the streamed CSV import"),
                ("lists", "Named lists of contacts"),
                ("segments", "Saved filters over contacts, with previews"),
                ("suppressions", "Addresses never sent to"),
                (
                    "operations",
                    "Delivery limits and engine status (operators)",
                ),
                ("ledger", "Anchors, proofs and settlements"),
                ("meta", "Health and this document"),
            ]
            .into_iter()
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(name)
                    .description(Some(description))
                    .build()
            })
            .collect(),
        );
    }
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ProblemBody::name())))
                .build(),
        )
        .build()
}

/// Adds the problem responses an operation can give that it does not document itself.
fn add_problems(item: &mut PathItem) {
    let operations = [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
    ];
    for op in operations.into_iter().flatten() {
        let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let has_body = op.request_body.is_some();
        let mut wanted = vec!["Unauthenticated", "Forbidden", "Internal", "Unavailable"];
        if has_params || has_body {
            wanted.push("BadRequest");
        }
        if has_params {
            wanted.push("NotFound");
        }
        if has_body {
            wanted.extend(["PayloadTooLarge", "UnsupportedMediaType", "Unprocessable"]);
        }
        for name in wanted {
            let status = PROBLEMS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, s, _)| *s)
                .expect("a listed problem");
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ROUTES;
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_registered_route_is_documented_and_nothing_else() {
        let doc: Value = serde_json::from_str(document_json()).unwrap();
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path) in ROUTES {
            let op = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not in the document"))[*method];
            assert!(op.is_object(), "{method} {path} is not in the document");
            assert!(
                op["operationId"].is_string() && op["tags"].is_array(),
                "{method} {path} lacks an operation id or tag"
            );
            if path.starts_with("/v1/") {
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            } else {
                assert_eq!(op["security"], serde_json::json!([{}]), "{path} is open");
            }
        }
        let documented: usize = paths
            .values()
            .map(|item| {
                ["get", "put", "post", "delete", "patch", "head", "options"]
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .count()
            })
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document has extra operations"
        );
        let ids: std::collections::BTreeSet<_> = paths
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
        assert_eq!(
            doc["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }
}
