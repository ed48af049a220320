//! The admin REST API for internal teams (actix-web, JSON under `/v1`).
//!
//! - Tenants and their API keys ([`tenants`]); campaigns, their commands, stats and
//!   recipients ([`campaigns`], [`import`]); contacts with a streamed CSV import
//!   ([`contacts`]), lists ([`lists`]), segments with previews ([`segments`]),
//!   suppressions ([`suppressions`]); delivery limits and engine status
//!   ([`operations`]); anchors, proofs and settlements ([`ledger`]).
//! - `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers and DTOs
//!   with utoipa; the route table below registers the routes and lists them in the
//!   document from the same lines, so the two cannot drift apart. `GET /healthz`.
//! - Every `/v1` route takes a bearer credential (API key or JWT) through
//!   [`Authenticator`], checked before the body is read; who may do what is in
//!   [`access`].
//! - Errors are RFC 9457 problems (`application/problem+json`), from one mapping in
//!   [`problem`]; bodies are read with field-naming extractors ([`extract`]).
//!
//! Handlers run on actix-web's worker threads, each with a runtime of its own; the
//! store, log and auth calls are moved onto the runtime [`serve`] was called on, where
//! the adapters' connections live (like the tracking listener).
//!
//! [`Authenticator`]: crate::auth::Authenticator

mod access;
mod campaigns;
mod contacts;
pub mod control;
mod csv;
pub mod domains;
mod extract;
mod import;
mod ledger;
pub use ledger::ProofBody;
mod lists;
mod meta;
mod operations;
pub mod problem;
mod segments;
mod suppressions;
mod tenants;

pub use control::{
    DomainAuthority, DomainHosts, DomainServiceError, EngineStatus, EngineStatusReport, HostRule,
    PartitionLag, QueueStatus, StatusError, ThrottleControl, ThrottleEntry, ThrottleError,
    ThrottleKind, ThrottleLimit, ThrottleTable,
};

use crate::auth::Authenticator;
use crate::intake::Intake;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};
use maily_engine::ports::{HotState, Store};
use meta::Document;
use problem::Problem;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long the work behind one request may take before it is answered 503.
pub const WORK_TIMEOUT: Duration = Duration::from_secs(30);
/// actix-web worker threads: the work runs on the caller's runtime, so two suffice.
const WORKERS: usize = 2;
/// Seconds requests in flight get to finish once shutdown starts.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// What the admin API works with.
pub struct AdminDeps {
    /// Validates campaigns and stages their recipients.
    pub intake: Arc<Intake>,
    /// Tenants, keys, campaigns, contacts, lists, segments, suppressions, the ledger.
    pub store: Arc<dyn Store>,
    /// Suppressions are written here too when given (the sender reads them here).
    pub hot: Option<Arc<dyn HotState>>,
    /// Checks the bearer credentials of every `/v1` call.
    pub auth: Arc<Authenticator>,
    /// The delivery limits in force.
    pub throttles: Arc<dyn ThrottleControl>,
    /// Partitions, leadership, restarts and queue depths of the engine.
    pub status: Arc<dyn EngineStatus>,
    /// The tenants' allowances, shared with the gRPC API: uploads wait within them.
    pub quotas: Arc<crate::quota::Quotas>,
    /// Makes DKIM keys for registered domains and checks their DNS records; without
    /// it domains get no key of their own and only operators can verify them.
    pub domains: Option<Arc<dyn DomainAuthority>>,
    /// The tenants' own return-path and tracking hosts that are on.
    pub hosts: DomainHosts,
}

/// Serves the admin API on `listener` until `shutdown` completes, then stops accepting
/// connections and lets requests in flight finish (streamed imports included, for up
/// to 30 s).
pub async fn serve(
    listener: std::net::TcpListener,
    deps: AdminDeps,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = listener.local_addr().ok();
    let state = web::Data::new(State {
        intake: deps.intake,
        store: deps.store,
        hot: deps.hot,
        auth: deps.auth,
        throttles: deps.throttles,
        status: deps.status,
        quotas: deps.quotas,
        domains: deps.domains,
        hosts: deps.hosts,
        runtime: tokio::runtime::Handle::current(),
    });
    // No OS signal handlers: `maily serve` orders the shutdown of every listener.
    let server = HttpServer::new(move || app(state.clone()))
        .workers(WORKERS)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
    let handle = server.handle();
    info!(addr = ?addr, "admin api listening");
    let mut server = server;
    tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            info!("admin api shutting down");
            let ((), result) = tokio::join!(handle.stop(true), server);
            result
        }
    }
}

/// The application: the routes, authentication in front of `/v1`, problem answers for
/// malformed paths and unknown routes.
fn app(
    state: web::Data<State>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| Problem::bad_field("path", e.to_string()).into()),
        )
        .configure(register)
        .default_service(web::to(problem::no_route))
        .wrap(actix_web::middleware::from_fn(access::authenticate))
}

/// What handlers share.
pub(crate) struct State {
    pub(crate) intake: Arc<Intake>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hot: Option<Arc<dyn HotState>>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) throttles: Arc<dyn ThrottleControl>,
    pub(crate) status: Arc<dyn EngineStatus>,
    pub(crate) quotas: Arc<crate::quota::Quotas>,
    pub(crate) domains: Option<Arc<dyn DomainAuthority>>,
    pub(crate) hosts: DomainHosts,
    /// The runtime of the caller of [`serve`], where the port calls run.
    runtime: tokio::runtime::Handle,
}

/// Runs a request's work on the caller's runtime, bounded by [`WORK_TIMEOUT`]. The work
/// goes on when the client goes away, so a write is never cut half-way.
pub(crate) async fn run<T, Fut>(
    state: &web::Data<State>,
    work: impl FnOnce(Arc<State>) -> Fut,
) -> Result<T, Problem>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, Problem>> + Send + 'static,
{
    let shared = Arc::clone(state);
    let runtime = shared.runtime.clone();
    let work = work(shared);
    let task = runtime.spawn(async move {
        tokio::time::timeout(WORK_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                warn!(timeout = ?WORK_TIMEOUT, "admin request timed out");
                Err(Problem::unavailable(
                    "the request took too long; retry later",
                ))
            })
    });
    task.await.unwrap_or_else(|e| {
        error!(error = %e, "admin request task failed");
        Err(Problem::internal(e))
    })
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    match serde_json::to_vec(body) {
        Ok(bytes) => HttpResponse::build(status)
            .content_type("application/json")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(bytes),
        Err(e) => actix_web::ResponseError::error_response(&Problem::internal(e)),
    }
}

/// 200 with a JSON body.
pub(crate) fn ok<T: Serialize>(body: &T) -> HttpResponse {
    json(StatusCode::OK, body)
}

/// 204.
pub(crate) fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// Declares every route once: registers it with actix-web, lists it in [`ROUTES`], and
/// puts its handler's `#[utoipa::path]` into [`ApiDoc`].
macro_rules! routes {
    ($( $path:literal { $( $method:ident => $module:ident :: $handler:ident ),+ $(,)? } )*) => {
        /// Registers every route; a method a path lacks is a 405 problem.
        fn register(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $( .route(web::$method().to($module::$handler)) )+
                        .default_service(web::to(problem::method_not_allowed)),
                );
            )*
        }

        /// Every route as `(method, path)`, in registration order.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path), )+ )* ];

        /// The OpenAPI document of every route.
        #[derive(utoipa::OpenApi)]
        #[openapi(
            paths( $( $( $module::$handler, )+ )* ),
            modifiers(&Document),
        )]
        pub struct ApiDoc;
    };
}

// Literal paths come before the parameterised ones they would also match.
routes! {
    "/healthz" { get => meta::healthz }
    "/openapi.json" { get => meta::openapi }
    "/v1/tenants" { get => tenants::list }
    "/v1/tenants/{tenant}" { get => tenants::get, put => tenants::put }
    "/v1/tenants/{tenant}/api-keys" { get => tenants::list_keys, post => tenants::create_key }
    "/v1/tenants/{tenant}/api-keys/{key}" { delete => tenants::revoke_key }
    "/v1/tenants/{tenant}/domains" { get => domains::list, post => domains::add }
    "/v1/tenants/{tenant}/domains/{domain}" { delete => domains::remove }
    "/v1/tenants/{tenant}/domains/{domain}/verify" { post => domains::verify }
    "/v1/tenants/{tenant}/campaigns" { get => campaigns::list, post => campaigns::create }
    "/v1/tenants/{tenant}/campaigns/{campaign}" { get => campaigns::get, put => campaigns::update }
    "/v1/tenants/{tenant}/campaigns/{campaign}/schedule" { post => campaigns::schedule }
    "/v1/tenants/{tenant}/campaigns/{campaign}/start" { post => campaigns::start }
    "/v1/tenants/{tenant}/campaigns/{campaign}/pause" { post => campaigns::pause }
    "/v1/tenants/{tenant}/campaigns/{campaign}/resume" { post => campaigns::resume }
    "/v1/tenants/{tenant}/campaigns/{campaign}/cancel" { post => campaigns::cancel }
    "/v1/tenants/{tenant}/campaigns/{campaign}/stats" { get => campaigns::stats }
    "/v1/tenants/{tenant}/campaigns/{campaign}/recipients" { post => campaigns::recipients }
    "/v1/tenants/{tenant}/contacts" { get => contacts::list }
    "/v1/tenants/{tenant}/contacts/import" { post => contacts::import }
    "/v1/tenants/{tenant}/contacts/{email}" {
        get => contacts::get, put => contacts::put, delete => contacts::delete
    }
    "/v1/tenants/{tenant}/lists" { get => lists::list, post => lists::create }
    "/v1/tenants/{tenant}/lists/{list}" { get => lists::get, delete => lists::delete }
    "/v1/tenants/{tenant}/lists/{list}/members" {
        get => lists::members, post => lists::add_members
    }
    "/v1/tenants/{tenant}/lists/{list}/members/{email}" { delete => lists::remove_member }
    "/v1/tenants/{tenant}/segments" { get => segments::list, post => segments::create }
    "/v1/tenants/{tenant}/segments/preview" { post => segments::try_filter }
    "/v1/tenants/{tenant}/segments/{segment}" { get => segments::get, delete => segments::delete }
    "/v1/tenants/{tenant}/segments/{segment}/preview" { get => segments::preview }
    "/v1/tenants/{tenant}/suppressions" { get => suppressions::list }
    "/v1/tenants/{tenant}/suppressions/{email}" {
        put => suppressions::add, delete => suppressions::remove
    }
    "/v1/throttles" { get => operations::throttles }
    "/v1/throttles/{kind}" { put => operations::set_default }
    "/v1/throttles/{kind}/{name}" {
        put => operations::set_throttle, delete => operations::clear_throttle
    }
    "/v1/status" { get => operations::status }
    "/v1/anchors" { get => ledger::anchors }
    "/v1/anchors/{epoch}/proofs/{campaign}" { get => ledger::proof }
    "/v1/settlements/{epoch}" { get => ledger::settlement }
}
