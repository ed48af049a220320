//! The public gRPC API for senders: package `maily.v1` (`api/proto/maily/v1/`).
//!
//! [`serve`] runs on one listener:
//!
//! - `maily.v1.CampaignService` ([`campaigns`], [`upload`], [`lifecycle`]): create,
//!   read and update campaigns, stream recipients into them (staged until the campaign
//!   runs), schedule, start, pause, resume and cancel them, send single messages under
//!   idempotency keys, read committed stats, follow the tenant's events, look up
//!   anchor proofs;
//! - gRPC health checking (`grpc.health.v1.Health`): the overall server and
//!   `maily.v1.CampaignService` report `SERVING` until shutdown begins, then
//!   `NOT_SERVING` while calls in flight drain;
//! - server reflection (`grpc.reflection.v1` and `v1alpha`), describing the protos above
//!   and health, for grpcurl and similar tools.
//!
//! **Authentication.** Every `CampaignService` call goes through [`auth::Authenticated`]:
//! the bearer credential in the `authorization` metadata is checked with
//! [`Authenticator`] before the request body is read, and the caller's [`Principal`]
//! reaches the handler in the request's extensions. Each handler then checks the scope
//! it needs (`send` to create and upload, `read` to get a campaign and its stats) and
//! the campaign's tenant. A campaign of another tenant is answered `NOT_FOUND`, exactly
//! like an unknown id, so a caller cannot learn which ids exist elsewhere; naming
//! another tenant explicitly (`CreateCampaignRequest.tenant`) is `PERMISSION_DENIED`.
//! Health and reflection are open: load balancers probe health without credentials,
//! and reflection only describes the published protos.
//!
//! **Message size.** Requests above [`MAX_MESSAGE_BYTES`] are refused with
//! `RESOURCE_EXHAUSTED` (the status gRPC specifies for this; tonic itself says
//! `OUT_OF_RANGE`) before they are buffered; uploads send recipients in several
//! messages instead.
//!
//! [`Principal`]: crate::auth::Principal

mod auth;
mod campaigns;
mod lifecycle;
mod status;
mod upload;

use crate::auth::Authenticator;
use crate::events::EventHub;
use crate::intake::Intake;
use crate::quota::Quotas;
use campaigns::CampaignApi;
use maily_engine::ports::Store;
use proto::campaign_service_server::CampaignServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

/// The generated messages, server traits and clients of `maily.v1`.
pub mod proto {
    tonic::include_proto!("maily.v1");

    /// The encoded descriptor set of the `maily.v1` protos (served by reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/maily_v1_descriptor.bin"));
}

/// The largest request message accepted, encoded (4 MiB, gRPC's customary limit): at
/// roughly 100 bytes a recipient, some 40,000 recipients per upload message.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How often an idle connection is pinged, and how long the answer may take before the
/// connection is closed: a client that vanished mid-upload is noticed, and its upload
/// ends, within these.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gRPC API works with.
pub struct GrpcDeps {
    /// Validates and enqueues what callers send.
    pub intake: Arc<Intake>,
    /// Where campaigns and their committed stats are read.
    pub store: Arc<dyn Store>,
    /// Checks the bearer credentials of every call.
    pub auth: Arc<Authenticator>,
    /// The event feed behind `StreamEvents`.
    pub events: Arc<EventHub>,
    /// Each tenant's allowance of messages handed in; see [`crate::quota`].
    pub quotas: Arc<Quotas>,
}

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the gRPC API on `listener` until `shutdown` completes, then stops accepting
/// connections, lets calls in flight finish, and returns once every upload that was
/// still enqueueing (including those whose client went away) has ended.
pub async fn serve(
    listener: TcpListener,
    deps: GrpcDeps,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().ok();
    // Each upload task holds a clone of `uploads`; the receiver sees the channel
    // close once the server and every such task have dropped theirs.
    let (uploads, mut uploads_done) = mpsc::channel::<()>(1);
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let api = CampaignApi::new(
        deps.intake,
        deps.store,
        deps.events,
        deps.quotas,
        uploads,
        closing_rx,
    );
    let campaigns = auth::Authenticated::new(
        CampaignServiceServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        deps.auth,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CampaignServiceServer<CampaignApi>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let shutdown = async move {
        shutdown.await;
        info!("grpc server shutting down");
        let _ = closing.send(true);
        health
            .set_not_serving::<CampaignServiceServer<CampaignApi>>()
            .await;
    };
    info!(addr = ?addr, "grpc server listening");
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(campaigns)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    // `None` once all senders are gone: the server's (dropped with it) and the tasks'.
    let _ = uploads_done.recv().await;
    info!("grpc server stopped");
    Ok(())
}
