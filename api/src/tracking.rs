//! The tracking listener: the HTTP endpoints behind the links `engine::tracking` signs.
//!
//! - `GET /o/{token}`: an open; records `opened` and answers a transparent 1x1 GIF.
//! - `GET /c/{token}`: a click; records `clicked` and redirects (302) to the URL inside
//!   the verified token, never to anything taken from the request (no open redirect).
//! - `GET /u/{token}`: a page asking to confirm the unsubscribe. It records nothing:
//!   mail scanners follow GET links.
//! - `POST /u/{token}`: RFC 8058 one-click unsubscribe, and the page's form: suppresses
//!   the recipient for the tenant (store, then hot state) and records `unsubscribed`.
//!   Repeating it is harmless.
//! - `GET /healthz`.
//!
//! Opens and clicks are answered every time, but recorded at most once per message
//! (and link) within [`REPEAT_WINDOW`], and at most `events_per_ip_per_minute` from one
//! client address a minute ([`TrackingDeps::events_per_ip_per_minute`]): a scanner or a
//! script replaying a link cannot flood the event log. Analytics counts each message's
//! open and click once anyway. Nor are those of tokens issued longer ago than
//! `events_max_age` ([`TrackingDeps::events_max_age`]): a link of old mail still works,
//! but cannot be replayed into a campaign's figures for ever. Unsubscribe links never
//! expire.
//!
//! A token that does not verify gets 400 and nothing is recorded. When the event log
//! or the store fails the answer is 503, so the recipient (or their mail provider) can
//! try again.
//!
//! Handlers run on actix-web's worker threads, each with a runtime of its own; the
//! store, hot-state and log calls are moved onto the runtime [`serve`] was called on,
//! where the adapters' connections live (a Postgres or Redis connection opened on a
//! worker's runtime would die with it).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use maily_engine::ports::{EventLog, HotState, SuppressionStore};
use maily_engine::records::{self, EventRecord, topics};
use maily_engine::tracking::{TokenError, TokenKeys};
use maily_engine::{CampaignId, EmailAddress, EventKind, MessageId, TenantId, Timestamp};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// The largest request body accepted (the unsubscribe POST); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 4096;
/// How long the work behind one request (store, hot state, log) may take before the
/// request is answered 503.
pub const WORK_TIMEOUT: Duration = Duration::from_secs(10);
/// actix-web worker threads. Each request only verifies an HMAC and hands the rest to
/// the caller's runtime, so two are plenty.
const WORKERS: usize = 2;
/// Seconds requests in flight get to finish once shutdown starts.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// Repeats of one message's open (or one link's click) within this are not recorded.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// The most opens and clicks remembered for [`REPEAT_WINDOW`]; beyond it the memory is
/// cleared early, so a flood of distinct tokens cannot grow it.
const MAX_REMEMBERED: usize = 100_000;

/// Why the store lists an address suppressed by this listener.
pub const SUPPRESSION_REASON: &str = "unsubscribed";

/// A transparent 1x1 GIF (GIF89a, two-colour palette, colour 0 transparent).
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The pages hold inline styles and one form posting to their own URL; nothing else
/// may load, and they may not be framed (a framed confirm button invites clickjacking).
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                        frame-ancestors 'none'; base-uri 'none'";

/// What the tracking listener needs.
pub struct TrackingDeps {
    /// The keys tracking tokens are verified with (the current and the previous ones).
    pub keys: TokenKeys,
    /// Where opened, clicked and unsubscribed events go (`events` topic).
    pub log: Arc<dyn EventLog>,
    /// Where unsubscribed addresses are suppressed.
    pub store: Arc<dyn SuppressionStore>,
    /// Suppressed there too when given; a failure there is logged, the store has it.
    pub hot: Option<Arc<dyn HotState>>,
    /// Opens and clicks recorded from one client address a minute (the peer of the
    /// TCP connection: behind a proxy, the proxy's); 0 for no limit.
    pub events_per_ip_per_minute: u32,
    /// Opens and clicks of tokens issued longer ago are not recorded (version 1
    /// tokens, which carry no issue time, still are).
    pub events_max_age: Duration,
}

/// Which opens and clicks become events (see the module docs).
struct Gate {
    per_ip: u32,
    state: Mutex<GateState>,
}

struct GateState {
    minute: Instant,
    from: HashMap<IpAddr, u32>,
    window: Instant,
    /// (message, 0 for the open or 1 + the link's index).
    seen: HashSet<(MessageId, u32)>,
}

impl Gate {
    fn new(per_ip: u32) -> Self {
        let now = Instant::now();
        Gate {
            per_ip,
            state: Mutex::new(GateState {
                minute: now,
                from: HashMap::new(),
                window: now,
                seen: HashSet::new(),
            }),
        }
    }

    /// Whether a hit on `what` from `ip` is recorded; `Err` names why not.
    fn admit(&self, ip: Option<IpAddr>, what: (MessageId, u32)) -> Result<(), &'static str> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.window.elapsed() >= REPEAT_WINDOW || st.seen.len() >= MAX_REMEMBERED {
            st.window = Instant::now();
            st.seen.clear();
        }
        if st.minute.elapsed() >= Duration::from_secs(60) {
            st.minute = Instant::now();
            st.from.clear();
        }
        if st.seen.contains(&what) {
            return Err("repeat");
        }
        if self.per_ip > 0
            && let Some(ip) = ip
        {
            let n = st.from.entry(ip).or_insert(0);
            if *n >= self.per_ip {
                return Err("rate");
            }
            *n += 1;
        }
        st.seen.insert(what);
        Ok(())
    }
}

/// Serves the tracking endpoints on `listener` until `shutdown` completes, then stops
/// accepting connections and lets requests in flight finish (for up to 10 s).
pub async fn serve(
    listener: std::net::TcpListener,
    deps: TrackingDeps,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr().ok();
    let state = web::Data::new(State {
        keys: deps.keys,
        log: deps.log,
        store: deps.store,
        hot: deps.hot,
        gate: Gate::new(deps.events_per_ip_per_minute),
        max_age: deps.events_max_age,
        runtime: tokio::runtime::Handle::current(),
    });
    // No OS signal handlers and no `shutdown_signal`: the latter stops the whole actix
    // System once the server is down, which would cut the engine's own shutdown.
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .workers(WORKERS)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
    let handle = server.handle();
    info!(addr = ?addr, "tracking listener listening");
    let mut server = server;
    tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            info!("tracking listener shutting down");
            // The server future carries the stop out, so it is polled alongside.
            let ((), result) = tokio::join!(handle.stop(true), server);
            result
        }
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/o/{token}", web::get().to(open))
        .route("/c/{token}", web::get().to(click))
        .service(
            web::resource("/u/{token}")
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route(web::get().to(unsubscribe_page))
                .route(web::post().to(unsubscribe)),
        )
        .route("/healthz", web::get().to(healthz))
        .default_service(web::to(|| async {
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body("not found\n")
        }));
}

struct State {
    keys: TokenKeys,
    log: Arc<dyn EventLog>,
    store: Arc<dyn SuppressionStore>,
    hot: Option<Arc<dyn HotState>>,
    gate: Gate,
    max_age: Duration,
    /// The runtime of the caller of [`serve`], where the port calls run.
    runtime: tokio::runtime::Handle,
}

impl State {
    /// Runs `work` on the caller's runtime, bounded by [`WORK_TIMEOUT`]. The work goes
    /// on when the client goes away, so a suppression is never cut half-way.
    async fn run<F>(&self, work: F) -> Result<(), Refusal>
    where
        F: Future<Output = Result<(), Refusal>> + Send + 'static,
    {
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(WORK_TIMEOUT, work)
                .await
                .unwrap_or_else(|_| {
                    warn!(timeout = ?WORK_TIMEOUT, "tracking request timed out");
                    Err(Refusal::Unavailable)
                })
        });
        task.await.unwrap_or_else(|e| {
            error!(error = %e, "tracking request task failed");
            Err(Refusal::Unavailable)
        })
    }
}

/// Why a request was refused; the single mapping to HTTP answers.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("invalid link: {0}")]
    BadToken(#[from] TokenError),
    #[error("temporarily unavailable, please try again later")]
    Unavailable,
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::BadToken(_) => "bad_token",
            Refusal::Unavailable => "unavailable",
        }
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Refusal::BadToken(_) => StatusCode::BAD_REQUEST,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(format!("{self}\n"))
    }
}

/// Counts the request and turns a refusal into its answer.
fn respond(kind: &'static str, result: Result<HttpResponse, Refusal>) -> HttpResponse {
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::counter!("maily_tracking_requests_total", "kind" => kind, "result" => label)
        .increment(1);
    result.unwrap_or_else(|e| e.error_response())
}

/// Whether this hit of `token` (verified) is recorded; counts the ones that are not.
fn recorded(
    state: &State,
    req: &HttpRequest,
    kind: &'static str,
    token: &str,
    what: (MessageId, u32),
) -> bool {
    let expired = state.keys.issued_at(token).is_some_and(|issued| {
        let age = Timestamp::now().0.saturating_sub(issued.0);
        u128::try_from(age).unwrap_or(0) > state.max_age.as_millis()
    });
    let admitted = if expired {
        Err("expired")
    } else {
        state.gate.admit(req.peer_addr().map(|a| a.ip()), what)
    };
    match admitted {
        Ok(()) => true,
        Err(reason) => {
            metrics::counter!("maily_tracking_events_dropped_total", "kind" => kind, "reason" => reason)
                .increment(1);
            false
        }
    }
}

async fn open(state: web::Data<State>, req: HttpRequest, token: web::Path<String>) -> HttpResponse {
    respond("open", open_inner(&state, &req, &token).await)
}

async fn open_inner(
    state: &State,
    req: &HttpRequest,
    token: &str,
) -> Result<HttpResponse, Refusal> {
    let t = state.keys.verify_open(token)?;
    if recorded(state, req, "open", token, (t.message, 0)) {
        let event = event(
            t.message,
            t.tenant,
            t.campaign,
            t.recipient,
            EventKind::Opened,
        );
        let log = state.log.clone();
        state
            .run(async move { produce(&*log, &event).await })
            .await?;
    }
    Ok(HttpResponse::Ok()
        .content_type("image/gif")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(PIXEL_GIF))
}

async fn click(
    state: web::Data<State>,
    req: HttpRequest,
    token: web::Path<String>,
) -> HttpResponse {
    respond("click", click_inner(&state, &req, &token).await)
}

async fn click_inner(
    state: &State,
    req: &HttpRequest,
    token: &str,
) -> Result<HttpResponse, Refusal> {
    let t = state.keys.verify_click(token)?;
    // `verify_click` checked the URL (http(s), a host, no control characters), so it
    // is a valid header value; refuse rather than panic should that ever change.
    let location = HeaderValue::from_str(&t.url)
        .map_err(|_| TokenError::Malformed("URL is not a valid header value"))?;
    if recorded(
        state,
        req,
        "click",
        token,
        (t.message, 1 + u32::from(t.link)),
    ) {
        let kind = EventKind::Clicked { url: t.url };
        let event = event(t.message, t.tenant, t.campaign, t.recipient, kind);
        let log = state.log.clone();
        state
            .run(async move { produce(&*log, &event).await })
            .await?;
    }
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // The token (with the recipient in it) stays out of the target's Referer.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish())
}

async fn unsubscribe_page(state: web::Data<State>, token: web::Path<String>) -> HttpResponse {
    let result = state.keys.verify_unsubscribe(&token).map(|t| {
        page(&format!(
            "<h1>Unsubscribe</h1>\n<p>Stop sending these emails to <strong>{}</strong>?</p>\n\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
             value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
            escape_html(t.recipient.as_str())
        ))
    });
    respond("unsubscribe_page", result.map_err(Refusal::from))
}

// The body is read (so its size is bounded) but not looked at: RFC 8058 clients send
// `List-Unsubscribe=One-Click` form-encoded or as multipart, the page's form sends the
// same field, and what authorises the request is the signed token alone.
async fn unsubscribe(
    state: web::Data<State>,
    token: web::Path<String>,
    _body: web::Bytes,
) -> HttpResponse {
    respond("unsubscribe", unsubscribe_inner(&state, &token).await)
}

async fn unsubscribe_inner(state: &State, token: &str) -> Result<HttpResponse, Refusal> {
    let t = state.keys.verify_unsubscribe(token)?;
    let recipient = t.recipient.clone();
    let (store, hot, log) = (state.store.clone(), state.hot.clone(), state.log.clone());
    state
        .run(async move {
            let event = event(
                t.message,
                t.tenant,
                t.campaign,
                t.recipient,
                EventKind::Unsubscribed,
            );
            store
                .suppress(&event.tenant, &event.recipient, SUPPRESSION_REASON)
                .await
                .map_err(|e| {
                    warn!(error = %e, tenant = %event.tenant, "store refused an unsubscribe");
                    Refusal::Unavailable
                })?;
            if let Some(hot) = hot
                && let Err(e) = hot.suppress(&event.tenant, &event.recipient).await
            {
                // The sender falls back to the store while hot state is out, and the
                // store has the suppression already.
                warn!(error = %e, tenant = %event.tenant, "hot state refused an unsubscribe");
            }
            produce(&*log, &event).await
        })
        .await?;
    Ok(page(&format!(
        "<h1>Unsubscribed</h1>\n<p><strong>{}</strong> will not receive these emails any \
         more.</p>",
        escape_html(recipient.as_str())
    )))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

fn event(
    message_id: MessageId,
    tenant: TenantId,
    campaign: CampaignId,
    recipient: EmailAddress,
    kind: EventKind,
) -> EventRecord {
    EventRecord {
        message_id,
        tenant,
        campaign,
        recipient,
        at: Timestamp::now(),
        kind,
    }
}

/// Produces one event into the events topic, keyed by its campaign like every record.
async fn produce(log: &dyn EventLog, event: &EventRecord) -> Result<(), Refusal> {
    let key = event.campaign.to_string().into_bytes();
    log.produce(topics::EVENTS, vec![(key, records::encode(event))])
        .await
        .map_err(|e| {
            warn!(error = %e, kind = event.kind.name(), campaign = %event.campaign,
                "event log refused a tracking event");
            Refusal::Unavailable
        })?;
    Ok(())
}

/// A small HTML page around `body` (already escaped).
fn page(body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title></head>\n\
             <body style=\"font-family: sans-serif; max-width: 32em; margin: 3em auto; \
             padding: 0 1em\">\n{body}\n</body>\n</html>\n"
        ))
}

/// Escapes text for HTML element content and quoted attributes.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_is_a_1x1_gif() {
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!(&PIXEL_GIF[6..10], &[1, 0, 1, 0]);
        assert_eq!(PIXEL_GIF.last(), Some(&0x3b));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape_html("o'neil&co<b>\"x\"@example.org"),
            "o&#39;neil&amp;co&lt;b&gt;&quot;x&quot;@example.org"
        );
    }
}
