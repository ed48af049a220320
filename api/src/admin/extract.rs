//! Request extractors whose every failure is a [`Problem`] naming what to fix: JSON
//! bodies and queries deserialised with the path of the offending field, body size
//! limits and media types, and the authenticated caller.

use super::problem::{Kind, Problem};
use crate::auth::Principal;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::StreamExt as _;
use futures_util::future::{LocalBoxFuture, Ready, ready};
use serde::de::DeserializeOwned;

/// The largest JSON body most routes read.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// A JSON request body of at most `LIMIT` bytes, deserialised into `T`.
///
/// The body must be sent as `application/json` (or a `+json` type), else 415; a larger
/// one is 413; one that does not deserialise is 400 naming the field by its path.
#[derive(Debug)]
pub struct Json<T, const LIMIT: usize = MAX_JSON_BYTES>(pub T);

impl<T, const LIMIT: usize> Json<T, LIMIT> {
    /// The deserialised body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned, const LIMIT: usize> Json<T, LIMIT> {
    /// Reads the body from a payload a handler took whole (for routes that read more
    /// than one media type).
    pub async fn from_payload(req: &HttpRequest, payload: web::Payload) -> Result<Self, Problem> {
        if !is_json(req) {
            return Err(Problem::unsupported_media_type("application/json"));
        }
        if declared_length(req).is_some_and(|n| n > LIMIT) {
            return Err(Problem::too_large(LIMIT));
        }
        let body = read_body(payload.into_inner(), LIMIT).await?;
        parse_json(&body).map(Json)
    }
}

impl<T: DeserializeOwned + 'static, const LIMIT: usize> FromRequest for Json<T, LIMIT> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = is_json(req)
            .then_some(())
            .ok_or_else(|| Problem::unsupported_media_type("application/json"));
        let declared = declared_length(req);
        let payload = payload.take();
        Box::pin(async move {
            checked?;
            if declared.is_some_and(|n| n > LIMIT) {
                return Err(Problem::too_large(LIMIT));
            }
            let body = read_body(payload, LIMIT).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// Whether the request declares a JSON body.
pub fn is_json(req: &HttpRequest) -> bool {
    media_type(req).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// Whether the request declares a CSV body.
pub fn is_csv(req: &HttpRequest) -> bool {
    media_type(req).is_some_and(|m| m == "text/csv")
}

/// The request's media type, lower case, without parameters.
fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// The `Content-Length` the client declared.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_body(mut payload: Payload, limit: usize) -> Result<Vec<u8>, Problem> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_field("body", format!("unreadable: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Problem::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Deserialises a JSON body, naming the offending field of a failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_field("body", "is empty; send a JSON document"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_problem(&path, e.inner())
    })?;
    de.end().map_err(|e| json_problem(".", &e))?;
    Ok(value)
}

fn json_problem(path: &str, e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    let message = without_position(&e.to_string());
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            Kind::BadRequest,
            format!("the body is not valid JSON ({message} at {at})"),
        ),
        Category::Data => {
            let field = field_of(path, &message);
            Problem::new(Kind::BadRequest, format!("{field}: {message} (at {at})"))
                .with_field(field, message)
        }
    }
}

/// The field a data error is about. serde_path_to_error's path ends at an unknown
/// field already, but at the object holding a missing one, whose name is only in the
/// message.
fn field_of(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (missing, parent) {
        (Some(name), "") => name.to_string(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "") => "body".to_string(),
        (None, parent) => parent.to_string(),
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A query string deserialised into `T`; a failure is 400 naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_query(req.query_string()).map(Query))
    }
}

/// Deserialises a query string, naming the offending parameter of a failure.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = field_of(&path, &message);
        let field = if field == "body" {
            "query".to_string()
        } else {
            field
        };
        Problem::bad_field(field, message)
    })
}

/// The authenticated caller, put in the request's extensions by the authentication
/// middleware of every `/v1` route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Fail closed: a route wired without the middleware serves nobody.
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| super::problem::unauthenticated(&crate::auth::AuthError::Missing)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        subject: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        template: Inner,
        #[serde(default)]
        vars: BTreeMap<String, String>,
        limit: Option<u32>,
    }

    fn field(p: &Problem) -> String {
        p.body().errors[0].field.clone()
    }

    #[test]
    fn json_failures_name_the_field() {
        let unknown =
            parse_json::<Outer>(br#"{"name": "a", "nmae": 1, "template": {"subject": "s"}}"#)
                .unwrap_err();
        assert_eq!(field(&unknown), "nmae");
        assert!(unknown.body().detail.contains("unknown field `nmae`"));
        let nested =
            parse_json::<Outer>(br#"{"name": "a", "template": {"subjet": "s"}}"#).unwrap_err();
        assert_eq!(field(&nested), "template.subjet");
        let wrong =
            parse_json::<Outer>(br#"{"name": "a", "template": {"subject": 5}}"#).unwrap_err();
        assert_eq!(field(&wrong), "template.subject");
        assert!(wrong.body().detail.contains("line 1 column"), "{wrong}");
        let missing = parse_json::<Outer>(br#"{"template": {"subject": "s"}}"#).unwrap_err();
        assert_eq!(field(&missing), "name");
        let map = parse_json::<Outer>(
            br#"{"name": "a", "template": {"subject": "s"}, "vars": {"k": 1}}"#,
        )
        .unwrap_err();
        assert_eq!(field(&map), "vars.k");
        let syntax = parse_json::<Outer>(b"{\"name\": \n").unwrap_err();
        assert!(syntax.body().errors.is_empty());
        assert!(syntax.body().detail.contains("line 2"), "{syntax}");
        let trailing =
            parse_json::<Outer>(br#"{"name": "a", "template": {"subject": "s"}} x"#).unwrap_err();
        assert_eq!(trailing.kind(), Kind::BadRequest);
        assert_eq!(
            field(&parse_json::<Outer>(b"  ").unwrap_err()),
            "body",
            "an empty body"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Paging {
        after: Option<String>,
        limit: Option<u32>,
    }

    #[test]
    fn query_failures_name_the_parameter() {
        let ok: Paging = parse_query("after=a%40b.example&limit=5").unwrap();
        assert_eq!(ok.after.as_deref(), Some("a@b.example"));
        assert_eq!(
            field(&parse_query::<Paging>("limit=x").unwrap_err()),
            "limit"
        );
        assert_eq!(field(&parse_query::<Paging>("lmit=5").unwrap_err()), "lmit");
    }
}
