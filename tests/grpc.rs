//! The public gRPC API end to end: a whole engine on embedded adapters, the gRPC
//! server on a port-0 listener, and the generated client over real HTTP/2.

mod common;

use common::{Harness, per_recipient, run};
use futures::StreamExt;
use maily_api::auth::{Authenticator, Scope, keys};
use maily_api::events::EventHub;
use maily_api::grpc::proto::campaign_service_client::CampaignServiceClient;
use maily_api::grpc::proto::{
    CampaignCommandRequest, CampaignStatus, CreateCampaignRequest, GetCampaignRequest,
    GetCampaignStatsRequest, Recipient, StreamEventsRequest, Template, UploadRecipientsRequest,
};
use maily_api::grpc::{GrpcDeps, MAX_MESSAGE_BYTES, ServeError, serve};
use maily_api::intake::Intake;
use maily_api::quota::{Quota, Quotas};
use maily_engine::{CampaignId, TenantId, Timestamp};
use maily_smtp::SinkReply;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_types::StatusExt;

/// The gRPC server of a harness's engine.
struct GrpcServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl GrpcServer {
    async fn start(h: &Harness) -> GrpcServer {
        GrpcServer::start_with(h, Quotas::unlimited()).await
    }

    async fn start_with(h: &Harness, quotas: Quotas) -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let store = h.ports.store.clone();
        let deps = GrpcDeps {
            intake: Arc::new(Intake::new(h.ports.log.clone(), store.clone())),
            auth: Arc::new(Authenticator::new(store.clone(), None)),
            events: EventHub::start(h.ports.log.clone())
                .await
                .expect("event feed"),
            quotas: Arc::new(quotas),
            store,
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, deps, async {
            let _ = stopped.await;
        }));
        GrpcServer { addr, stop, task }
    }

    async fn channel(&self) -> Channel {
        channel_to(self.addr).await
    }

    async fn client(&self) -> CampaignServiceClient<Channel> {
        CampaignServiceClient::new(self.channel().await)
    }

    /// Stops the server; it returns only once every upload, cut off or not, ended.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("grpc server stops")
            .expect("grpc task")
            .expect("grpc server ends cleanly");
    }
}

async fn channel_to(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects")
}

/// A new API key of `tenant` with `scopes`, as its owner would present it.
async fn api_key(h: &Harness, tenant: &TenantId, scopes: &[Scope]) -> String {
    let (record, plain) = keys::generate(tenant, "grpc test", scopes).expect("key");
    h.ports
        .store
        .create_api_key(&record)
        .await
        .expect("key stored");
    plain.into_string()
}

/// `message` with `key` as its bearer credential.
fn authed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    request
}

fn new_campaign(name: &str) -> CreateCampaignRequest {
    CreateCampaignRequest {
        name: name.into(),
        from: "news@shop.example".into(),
        from_name: Some("Shop".into()),
        template: Some(Template {
            subject: "Hello {{ first_name }}".into(),
            text: Some("Dear {{ first_name }},\nyour code is {{ code }}.\n".into()),
            html: None,
        }),
        tenant: String::new(),
    }
}

/// Recipient number `i` (row `i + 1` of an upload starting at 0).
fn recipient(i: usize) -> Recipient {
    Recipient {
        email: format!("person{i}@example.com"),
        variables: BTreeMap::from([
            ("first_name".to_string(), format!("Name{i}")),
            ("code".to_string(), format!("CODE-{i}")),
        ]),
    }
}

/// An upload message of recipients `range`, naming the campaign when `id` is given.
fn chunk(id: Option<&str>, range: std::ops::Range<usize>) -> UploadRecipientsRequest {
    UploadRecipientsRequest {
        campaign_id: id.unwrap_or_default().to_string(),
        recipients: range.map(recipient).collect(),
    }
}

fn field_violations(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err("call refused");
    assert_eq!(status.code(), code, "{status:?}");
    status
}

#[test]
fn ten_thousand_streamed_recipients_are_started_followed_and_counted() {
    run(async {
        let hard = [17usize, 2500, 9001];
        let rejections = hard
            .iter()
            .map(|i| {
                (
                    format!("person{i}@example.com"),
                    SinkReply::new(550, "5.1.1 no such user here"),
                )
            })
            .collect();
        let h = Harness::start(rejections).await;
        let server = GrpcServer::start(&h).await;
        let key = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let mut client = server.client().await;

        let created = client
            .create_campaign(authed(new_campaign("spring sale"), &key))
            .await
            .expect("campaign created")
            .into_inner()
            .campaign
            .expect("campaign");
        assert_eq!(created.tenant, "acme");
        let fetched = client
            .get_campaign(authed(
                GetCampaignRequest {
                    campaign_id: created.id.clone(),
                },
                &key,
            ))
            .await
            .expect("campaign read")
            .into_inner()
            .campaign;
        assert_eq!(fetched.as_ref(), Some(&created));
        assert_eq!(created.status(), CampaignStatus::Draft);

        // 20 messages of 500; three rows (1-based, across the stream) are broken.
        let bad_rows = [7u64, 4242, 10_000];
        let messages: Vec<_> = (0..20)
            .map(|m| {
                let mut c = chunk(
                    (m == 0).then_some(created.id.as_str()),
                    m * 500..(m + 1) * 500,
                );
                for (k, r) in c.recipients.iter_mut().enumerate() {
                    let row = (m * 500 + k + 1) as u64;
                    if bad_rows.contains(&row) {
                        r.email = format!("row-{row}.example.com");
                    }
                }
                c
            })
            .collect();
        let reply = client
            .upload_recipients(authed(futures::stream::iter(messages), &key))
            .await
            .expect("upload")
            .into_inner();
        assert_eq!(
            (reply.rows, reply.accepted, reply.rejected),
            (10_000, 9_997, 3)
        );
        assert!(!reply.errors_truncated);
        let rows: Vec<u64> = reply.errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, bad_rows);
        assert_eq!(reply.errors[1].input, "row-4242.example.com");
        assert!(
            reply.errors[1].reason.contains("invalid address"),
            "{:?}",
            reply.errors[1]
        );

        // Staged, not sent: the campaign is a draft until it starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(h.sink.received().is_empty());

        // Follow the campaign's events, then start it.
        let mut events = client
            .stream_events(authed(
                StreamEventsRequest {
                    campaign_id: created.id.clone(),
                },
                &key,
            ))
            .await
            .expect("event stream")
            .into_inner();
        let started = client
            .start_campaign(authed(
                CampaignCommandRequest {
                    campaign_id: created.id.clone(),
                },
                &key,
            ))
            .await
            .expect("started")
            .into_inner();
        assert_eq!(started.status(), CampaignStatus::Running);
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut finished = 0;
        while finished < 9_997 {
            let event = tokio::time::timeout(Duration::from_secs(60), events.next())
                .await
                .unwrap_or_else(|_| panic!("events stopped coming after {seen:?}"))
                .expect("stream open")
                .expect("event");
            assert_eq!(event.campaign_id, created.id);
            if matches!(event.kind.as_str(), "delivered" | "bounced_hard") {
                finished += 1;
            }
            if event.kind == "bounced_hard" {
                assert_eq!(event.bounce_class, "hard", "{event:?}");
                assert!(event.detail.contains("no such user"), "{event:?}");
            }
            *seen.entry(event.kind).or_default() += 1;
        }
        assert_eq!(seen.get("delivered"), Some(&(9_997 - hard.len() as u64)));
        assert_eq!(seen.get("bounced_hard"), Some(&(hard.len() as u64)));
        assert_eq!(seen.get("injected"), Some(&9_997));

        let id = CampaignId::parse(&created.id).expect("uuid");
        h.wait_finished(&[(id, 9_997)]).await;
        let stats = client
            .get_campaign_stats(authed(
                GetCampaignStatsRequest {
                    campaign_id: created.id.clone(),
                },
                &key,
            ))
            .await
            .expect("stats")
            .into_inner()
            .stats
            .expect("stats");

        let received = h.sink.received();
        let per = per_recipient(&received);
        assert_eq!(stats.delivered, received.len() as u64);
        assert_eq!(per.len(), received.len(), "each recipient received once");
        assert_eq!(stats.delivered, 9_997 - hard.len() as u64);
        assert_eq!(stats.bounced_hard, hard.len() as u64);
        assert_eq!(h.sink.rejected_recipients(), hard.len() as u64);
        assert_eq!(stats.finished, 9_997);
        let committed = h.stats(id).await;
        assert_eq!(stats.injected, committed.injected);
        assert_eq!(stats.delivered, committed.delivered);
        assert_eq!(stats.bounced_hard, committed.bounced_hard);
        assert_eq!(stats.rejected + stats.expired + stats.suppressed, 0);

        server.stop().await;
    });
}

#[test]
fn credentials_scopes_tenants_and_bad_input_get_clear_statuses() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let beta = TenantId::parse("beta").expect("tenant");
        h.ports
            .store
            .upsert_tenant(&beta, "Beta")
            .await
            .expect("tenant");
        let server = GrpcServer::start(&h).await;
        let full = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let read_only = api_key(&h, &h.tenant, &[Scope::Read]).await;
        let send_only = api_key(&h, &h.tenant, &[Scope::Send]).await;
        let other_tenant = api_key(&h, &beta, &[Scope::Send, Scope::Read]).await;
        let revoked = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let revoked_id = revoked.split('_').nth(1).expect("key id");
        assert!(
            h.ports
                .store
                .revoke_api_key(&h.tenant, revoked_id, Timestamp::now())
                .await
                .expect("revoked")
        );
        let mut client = server.client().await;

        let campaign = client
            .create_campaign(authed(new_campaign("a's"), &full))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        let command = |key: &str| {
            authed(
                CampaignCommandRequest {
                    campaign_id: campaign.id.clone(),
                },
                key,
            )
        };
        // Commands need the send scope and the campaign's tenant.
        assert_code(
            client.start_campaign(command(&read_only)).await,
            Code::PermissionDenied,
        );
        assert_code(
            client.start_campaign(command(&other_tenant)).await,
            Code::NotFound,
        );
        assert_code(
            client.start_campaign(command(&revoked)).await,
            Code::Unauthenticated,
        );
        client
            .start_campaign(command(&send_only))
            .await
            .expect("the send key starts it");
        assert_code(
            client.pause_campaign(command(&other_tenant)).await,
            Code::NotFound,
        );
        assert_code(
            client.cancel_campaign(command(&other_tenant)).await,
            Code::NotFound,
        );
        let foreign_events = client
            .stream_events(authed(
                StreamEventsRequest {
                    campaign_id: campaign.id.clone(),
                },
                &other_tenant,
            ))
            .await;
        assert_code(foreign_events, Code::NotFound);
        // Starting twice: the status does not allow it, and the error says which it is.
        let status = assert_code(
            client.start_campaign(command(&full)).await,
            Code::FailedPrecondition,
        );
        assert!(status.message().contains("is running"), "{status:?}");
        let failure = status.get_details_precondition_failure().expect("details");
        assert_eq!(failure.violations[0].subject, campaign.id);
        let get = |key: &str| {
            authed(
                GetCampaignRequest {
                    campaign_id: campaign.id.clone(),
                },
                key,
            )
        };
        let stats = |key: &str| {
            authed(
                GetCampaignStatsRequest {
                    campaign_id: campaign.id.clone(),
                },
                key,
            )
        };

        // Credentials.
        let status = assert_code(
            client.get_campaign(get(&revoked)).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "API key revoked");
        let status = assert_code(
            client.get_campaign(get("mly_garbage")).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "malformed credentials");
        let unknown = format!("mly_0123456789abcdef_{}", "A".repeat(43));
        let status = assert_code(
            client.get_campaign(get(&unknown)).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "invalid API key");
        let anonymous = GetCampaignRequest {
            campaign_id: campaign.id.clone(),
        };
        let status = assert_code(client.get_campaign(anonymous).await, Code::Unauthenticated);
        assert!(
            status.message().starts_with("authentication required"),
            "{status:?}"
        );
        let status = assert_code(
            client
                .upload_recipients(authed(futures::stream::iter(Vec::new()), "nope"))
                .await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "malformed credentials");

        // Scopes.
        let status = assert_code(
            client
                .create_campaign(authed(new_campaign("ro"), &read_only))
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(status.message(), "the send scope is required");
        let upload = futures::stream::iter(vec![chunk(Some(&campaign.id), 0..1)]);
        assert_code(
            client.upload_recipients(authed(upload, &read_only)).await,
            Code::PermissionDenied,
        );
        let status = assert_code(
            client.get_campaign(get(&send_only)).await,
            Code::PermissionDenied,
        );
        assert_eq!(status.message(), "the read scope is required");
        client
            .get_campaign(get(&read_only))
            .await
            .expect("read key reads");
        client
            .get_campaign_stats(stats(&read_only))
            .await
            .expect("read key reads stats");

        // Tenants: another tenant's campaign is not found, exactly like an unknown id.
        let missing = CampaignId::new();
        let status = assert_code(
            client.get_campaign(get(&other_tenant)).await,
            Code::NotFound,
        );
        assert_eq!(
            status.message(),
            format!("campaign {} not found", campaign.id)
        );
        assert_code(
            client.get_campaign_stats(stats(&other_tenant)).await,
            Code::NotFound,
        );
        let upload = futures::stream::iter(vec![chunk(Some(&campaign.id), 0..5)]);
        assert_code(
            client
                .upload_recipients(authed(upload, &other_tenant))
                .await,
            Code::NotFound,
        );
        let status = assert_code(
            client
                .get_campaign(authed(
                    GetCampaignRequest {
                        campaign_id: missing.to_string(),
                    },
                    &other_tenant,
                ))
                .await,
            Code::NotFound,
        );
        assert_eq!(status.message(), format!("campaign {missing} not found"));
        let mut for_acme = new_campaign("takeover");
        for_acme.tenant = "acme".into();
        let status = assert_code(
            client
                .create_campaign(authed(for_acme, &other_tenant))
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(status.message(), "not allowed for this tenant");

        // Bad input names the field.
        let mut bad_from = new_campaign("bad from");
        bad_from.from = "news.shop.example".into();
        let status = assert_code(
            client.create_campaign(authed(bad_from, &full)).await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status), ["from"]);
        let mut bad_html = new_campaign("bad html");
        bad_html.template.as_mut().unwrap().html = Some("<p>{{ first_name </p>".into());
        let status = assert_code(
            client.create_campaign(authed(bad_html, &full)).await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status), ["template.html"]);
        assert!(
            status
                .message()
                .starts_with("template.html: does not parse"),
            "{status:?}"
        );
        let status = assert_code(
            client
                .create_campaign(authed(new_campaign("  "), &full))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status), ["name"]);
        let status = assert_code(
            client
                .get_campaign(authed(
                    GetCampaignRequest {
                        campaign_id: "nope".into(),
                    },
                    &full,
                ))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(field_violations(&status), ["campaign_id"]);

        // Oversized messages: refused whole in a unary call; mid-stream in an upload,
        // after which the rows read before stay accepted.
        let mut huge = new_campaign("huge");
        huge.template.as_mut().unwrap().html = Some("x".repeat(MAX_MESSAGE_BYTES + 1));
        let status = assert_code(
            client.create_campaign(authed(huge, &full)).await,
            Code::ResourceExhausted,
        );
        assert!(
            status
                .message()
                .contains(&format!("{MAX_MESSAGE_BYTES}-byte limit")),
            "{status:?}"
        );
        let mut oversized = chunk(None, 10..11);
        oversized.recipients[0]
            .variables
            .insert("blob".into(), "x".repeat(MAX_MESSAGE_BYTES));
        let upload = futures::stream::iter(vec![chunk(Some(&campaign.id), 0..10), oversized]);
        let status = assert_code(
            client.upload_recipients(authed(upload, &full)).await,
            Code::ResourceExhausted,
        );
        let info = status.get_details_error_info().expect("upload progress");
        assert_eq!(info.reason, "UPLOAD_STOPPED");
        assert_eq!(info.metadata["rows"], "10");
        assert_eq!(info.metadata["accepted"], "10");
        assert_eq!(info.metadata["campaign_id"], campaign.id);
        let id = CampaignId::parse(&campaign.id).expect("uuid");
        h.wait_finished(&[(id, 10)]).await;
        let counted = client
            .get_campaign_stats(stats(&full))
            .await
            .expect("still serving")
            .into_inner()
            .stats
            .expect("stats");
        assert_eq!(counted.delivered, 10);

        // Health and reflection need no credentials.
        let channel = server.channel().await;
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "maily.v1.CampaignService"] {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health")
                .into_inner();
            assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
        }
        let mut reflection = ServerReflectionClient::new(channel);
        let list = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(futures::stream::iter(vec![list]))
            .await
            .expect("reflection")
            .into_inner();
        let reply = replies.next().await.expect("a reply").expect("listed");
        let Some(MessageResponse::ListServicesResponse(listed)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<_> = listed.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"maily.v1.CampaignService"), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

        server.stop().await;
    });
}

#[test]
fn an_upload_cut_off_midway_keeps_what_was_accepted_and_the_server_serves_on() {
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let server = GrpcServer::start(&h).await;
        let key = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let mut client = server.client().await;
        let campaign = client
            .create_campaign(authed(new_campaign("cut"), &key))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        let id = CampaignId::parse(&campaign.id).expect("uuid");
        client
            .start_campaign(authed(
                CampaignCommandRequest {
                    campaign_id: campaign.id.clone(),
                },
                &key,
            ))
            .await
            .expect("started");

        // The upload goes through a TCP relay, so the test can drop the connection the
        // way a crashed client or a failed network would.
        let relay = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay_addr = relay.local_addr().expect("addr");
        let upstream = server.addr;
        let relay_task = tokio::spawn(async move {
            let (mut inbound, _) = relay.accept().await.expect("accept");
            let mut outbound = TcpStream::connect(upstream).await.expect("connect");
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        let mut cut_client = CampaignServiceClient::new(channel_to(relay_addr).await);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let call = {
            let key = key.clone();
            tokio::spawn(async move { cut_client.upload_recipients(authed(rx, &key)).await })
        };
        tx.unbounded_send(chunk(Some(&campaign.id), 0..100))
            .expect("sent");
        tx.unbounded_send(chunk(None, 100..200)).expect("sent");
        tx.unbounded_send(chunk(None, 200..300)).expect("sent");
        // The server stages what arrived without waiting for the end of the stream, and
        // the running campaign sends it.
        h.wait_finished(&[(id, 300)]).await;

        relay_task.abort();
        let outcome = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the cut call ends")
            .expect("call task");
        assert!(outcome.is_err(), "{outcome:?}");
        drop(tx);

        // The server serves on, and a new upload continues the campaign.
        let reply = client
            .upload_recipients(authed(
                futures::stream::iter(vec![chunk(Some(&campaign.id), 300..350)]),
                &key,
            ))
            .await
            .expect("new upload")
            .into_inner();
        assert_eq!((reply.rows, reply.accepted), (50, 50));
        h.wait_finished(&[(id, 350)]).await;
        let stats = client
            .get_campaign_stats(authed(
                GetCampaignStatsRequest {
                    campaign_id: campaign.id.clone(),
                },
                &key,
            ))
            .await
            .expect("stats")
            .into_inner()
            .stats
            .expect("stats");
        assert_eq!(stats.delivered, 350);
        let received = h.sink.received();
        assert_eq!(received.len(), 350);
        assert!(per_recipient(&received).values().all(|n| *n == 1));

        // Stopping waits for the cut upload's task too: it has ended.
        server.stop().await;
    });
}

/// `maily serve` with `[grpc] enabled` answers health checks, serves Prometheus metrics
/// with `[metrics] enabled`, and stops cleanly on SIGTERM.
#[test]
fn maily_serve_runs_the_grpc_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let port = free_port();
    let metrics_port = free_port();
    let config = dir.path().join("maily.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[log.file]\ndir = \"{}\"\n[grpc]\nenabled = true\n\
             bind = \"127.0.0.1:{port}\"\n[metrics]\nenabled = true\nbind = \"127.0.0.1:{metrics_port}\"\nlag_interval = \"50ms\"\n",
            dir.path().join("maily.db").display(),
            dir.path().join("log").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_maily"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("maily serve starts");
    let (served, scraped) = run(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let serving = loop {
            if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            {
                let reply = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if let Ok(reply) = reply {
                    let serving = reply.into_inner().status() == ServingStatus::Serving;
                    break serving;
                }
            }
            if std::time::Instant::now() > deadline {
                return (false, String::new());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Scrape until the lag probe has run once.
        let mut text = String::new();
        while std::time::Instant::now() < deadline && !text.contains("maily_consumer_lag{") {
            if let Ok(reply) =
                reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await
            {
                text = reply.text().await.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (serving, text)
    });
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("maily serve exits");
    assert!(served, "the gRPC API never answered SERVING");
    assert!(
        scraped.contains("maily_consumer_lag{group=\"sender\",topic=\"send\"} 0"),
        "{scraped}"
    );
    assert!(scraped.contains("maily_owned_partitions "), "{scraped}");
    assert!(
        scraped.contains("# HELP maily_owned_partitions Partitions this process owns."),
        "{scraped}"
    );
    assert!(status.success(), "maily serve exited with {status}");
}

#[test]
fn keyed_sends_go_out_once_and_campaigns_pause_resume_and_cancel() {
    use maily_api::grpc::proto::send_result::Outcome;
    use maily_api::grpc::proto::{KeyedMessage, SendMessagesRequest};
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let server = GrpcServer::start(&h).await;
        let key = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let mut client = server.client().await;
        let create = |name: &str| authed(new_campaign(name), &key);
        let receipts = client
            .create_campaign(create("receipts"))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");

        // The same batch twice: sent once, the repeat answers the first ids.
        let batch = |emails: &[&str]| SendMessagesRequest {
            campaign_id: receipts.id.clone(),
            messages: emails
                .iter()
                .enumerate()
                .map(|(i, e)| KeyedMessage {
                    idempotency_key: format!("order-{i}"),
                    email: e.to_string(),
                    variables: recipient(i).variables,
                })
                .collect(),
        };
        let emails = ["k0@example.com", "k1@example.com", "k2@example.com"];
        let first = client
            .send_messages(authed(batch(&emails), &key))
            .await
            .expect("sent")
            .into_inner()
            .results;
        assert!(
            first.iter().all(|r| r.outcome() == Outcome::Accepted),
            "{first:?}"
        );
        let again = client
            .send_messages(authed(batch(&emails), &key))
            .await
            .expect("sent again")
            .into_inner()
            .results;
        assert!(
            again.iter().all(|r| r.outcome() == Outcome::Repeated),
            "{again:?}"
        );
        let ids = |rs: &[maily_api::grpc::proto::SendResult]| {
            rs.iter().map(|r| r.message_id.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&first), ids(&again));
        // A key reused for another message is refused; the others of the batch go on.
        let reused = client
            .send_messages(authed(
                batch(&["other@example.com", "k1@example.com"]),
                &key,
            ))
            .await
            .expect("answered")
            .into_inner()
            .results;
        assert_eq!(reused[0].outcome(), Outcome::Rejected);
        assert!(reused[0].reason.contains("different message"), "{reused:?}");
        assert_eq!(reused[1].outcome(), Outcome::Repeated);
        let receipts_id = CampaignId::parse(&receipts.id).unwrap();
        h.wait_finished(&[(receipts_id, 3)]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per = per_recipient(&h.sink.received());
        assert_eq!(per.len(), 3);
        assert!(per.values().all(|n| *n == 1), "{per:?}");

        // Pause while running: nothing more goes out until it resumes; nothing is lost.
        let news = client
            .create_campaign(create("news"))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        let command = |id: &str| {
            authed(
                CampaignCommandRequest {
                    campaign_id: id.to_string(),
                },
                &key,
            )
        };
        let upload = futures::stream::iter(vec![chunk(Some(&news.id), 100..2100)]);
        let reply = client
            .upload_recipients(authed(upload, &key))
            .await
            .expect("uploaded")
            .into_inner();
        assert_eq!(reply.accepted, 2000);
        client
            .start_campaign(command(&news.id))
            .await
            .expect("started");
        let paused = client
            .pause_campaign(command(&news.id))
            .await
            .expect("paused")
            .into_inner();
        assert_eq!(paused.status(), CampaignStatus::Paused);
        // Deliveries already handed to the mail server finish; then the count holds.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let held_at = h.sink.accepted();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(h.sink.accepted(), held_at, "nothing is sent while paused");
        assert!(held_at < 2003, "the pause held some messages back");
        let resumed = client
            .resume_campaign(command(&news.id))
            .await
            .expect("resumed")
            .into_inner();
        assert_eq!(resumed.status(), CampaignStatus::Running);
        let news_id = CampaignId::parse(&news.id).unwrap();
        h.wait_finished(&[(news_id, 2000)]).await;
        let per = per_recipient(&h.sink.received());
        assert_eq!(per.len(), 2003);
        assert!(per.values().all(|n| *n == 1), "each recipient once");

        // Cancel: staged recipients are dropped, nothing is sent, it cannot start again.
        let dropped = client
            .create_campaign(create("dropped"))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        let upload = futures::stream::iter(vec![chunk(Some(&dropped.id), 3000..3050)]);
        client
            .upload_recipients(authed(upload, &key))
            .await
            .expect("uploaded");
        client
            .cancel_campaign(command(&dropped.id))
            .await
            .expect("cancelled");
        let status = assert_code(
            client.start_campaign(command(&dropped.id)).await,
            Code::FailedPrecondition,
        );
        assert!(status.message().contains("is cancelled"), "{status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(per_recipient(&h.sink.received()).len(), 2003);

        server.stop().await;
    });
}

#[test]
fn a_tenant_over_its_quota_is_told_to_wait_and_others_go_on() {
    use maily_api::grpc::proto::send_result::Outcome;
    use maily_api::grpc::proto::{KeyedMessage, SendMessagesRequest};
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let beta = TenantId::parse("beta").expect("tenant");
        let gamma = TenantId::parse("gamma").expect("tenant");
        for t in [&beta, &gamma] {
            h.ports.store.upsert_tenant(t, "T").await.expect("tenant");
            let own = format!("{t}.example");
            maily_engine::testkit::sending_domain(h.ports.store.as_ref(), t, &own).await;
        }
        // acme may hand in 5 messages a minute; gamma 2000 a second in bursts of
        // 100; beta is unlimited.
        let quotas = Quotas::new(
            None,
            HashMap::from([
                (
                    h.tenant.clone(),
                    Quota {
                        rate: "5/m".parse().unwrap(),
                        burst: 5,
                    },
                ),
                (
                    gamma.clone(),
                    Quota {
                        rate: "2000/s".parse().unwrap(),
                        burst: 100,
                    },
                ),
            ]),
        );
        let server = GrpcServer::start_with(&h, quotas).await;
        let mut client = server.client().await;
        let mut campaigns = HashMap::new();
        for t in [&h.tenant, &beta, &gamma] {
            let key = api_key(&h, t, &[Scope::Send, Scope::Read]).await;
            let mut new = new_campaign("receipts");
            if *t != h.tenant {
                new.from = format!("news@{t}.example");
            }
            let c = client
                .create_campaign(authed(new, &key))
                .await
                .expect("created")
                .into_inner()
                .campaign
                .expect("campaign");
            campaigns.insert(t.to_string(), (key, c.id));
        }
        let send = |tenant: &TenantId, from: usize, n: usize| {
            let (key, id) = campaigns[tenant.as_str()].clone();
            authed(
                SendMessagesRequest {
                    campaign_id: id,
                    messages: (from..from + n)
                        .map(|i| KeyedMessage {
                            idempotency_key: format!("q-{i}"),
                            email: format!("q{i}@example.com"),
                            variables: recipient(i).variables,
                        })
                        .collect(),
                },
                &key,
            )
        };

        let first = client
            .send_messages(send(&h.tenant, 0, 5))
            .await
            .expect("within the burst")
            .into_inner()
            .results;
        assert!(first.iter().all(|r| r.outcome() == Outcome::Accepted));
        let refused = assert_code(
            client.send_messages(send(&h.tenant, 5, 1)).await,
            Code::ResourceExhausted,
        );
        assert!(refused.message().contains("tenant acme"), "{refused:?}");
        let details = refused.get_error_details();
        let quota = details.quota_failure().expect("quota failure details");
        assert_eq!(quota.violations[0].subject, "tenant:acme");
        let retry = details.retry_info().expect("retry info");
        let delay = retry.retry_delay.expect("retry delay");
        assert!(
            delay > Duration::from_secs(1) && delay <= Duration::from_secs(12),
            "one message every 12 s: {delay:?}"
        );
        // Nothing of the refused call was taken: its key is still unused.
        let beta_sent = client
            .send_messages(send(&beta, 0, 50))
            .await
            .expect("beta is unlimited")
            .into_inner()
            .results;
        assert!(beta_sent.iter().all(|r| r.outcome() == Outcome::Accepted));

        // An upload over the quota is slowed down, not refused: every row is kept.
        let (_, gamma_id) = campaigns[gamma.as_str()].clone();
        let key = campaigns[gamma.as_str()].0.clone();
        client
            .start_campaign(authed(
                CampaignCommandRequest {
                    campaign_id: gamma_id.clone(),
                },
                &key,
            ))
            .await
            .expect("started");
        let chunks = (0..10).map(|i| {
            let id = (i == 0).then_some(gamma_id.as_str());
            chunk(id, i * 100..(i + 1) * 100)
        });
        let uploaded = client
            .upload_recipients(authed(
                futures::stream::iter(chunks.collect::<Vec<_>>()),
                &key,
            ))
            .await
            .expect("upload under a quota")
            .into_inner();
        assert_eq!((uploaded.rows, uploaded.accepted), (1000, 1000));

        let acme_id = CampaignId::parse(&campaigns[h.tenant.as_str()].1).unwrap();
        let beta_id = CampaignId::parse(&campaigns[beta.as_str()].1).unwrap();
        let gamma_id = CampaignId::parse(&gamma_id).unwrap();
        h.wait_finished(&[(acme_id, 5), (beta_id, 50), (gamma_id, 1000)])
            .await;
        server.stop().await;
    });
}

/// Bytes as they are: a client that sends what is not protobuf at all.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let out = src.chunk().to_vec();
        src.advance(out.len());
        Ok(Some(out))
    }
}

#[test]
fn bytes_that_are_not_protobuf_are_refused_and_what_came_before_is_kept() {
    use prost::Message;
    use tonic::codegen::http::uri::PathAndQuery;
    run(async {
        let h = Harness::start(HashMap::new()).await;
        let server = GrpcServer::start(&h).await;
        let key = api_key(&h, &h.tenant, &[Scope::Send, Scope::Read]).await;
        let mut client = server.client().await;
        let campaign = client
            .create_campaign(authed(new_campaign("raw"), &key))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        client
            .start_campaign(authed(
                CampaignCommandRequest {
                    campaign_id: campaign.id.clone(),
                },
                &key,
            ))
            .await
            .expect("started");

        // A truncated varint and a field of wire type 7: no protobuf decoder accepts them.
        let garbage = vec![
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ];
        let invalid_wire_type = vec![0x0f, 0x01];
        let mut raw = tonic::client::Grpc::new(server.channel().await);
        for body in [garbage.clone(), invalid_wire_type] {
            raw.ready().await.expect("ready");
            let status = raw
                .unary(
                    authed(body, &key),
                    PathAndQuery::from_static("/maily.v1.CampaignService/GetCampaign"),
                    RawCodec,
                )
                .await
                .expect_err("refused");
            // INTERNAL is the code the gRPC status code list gives a request that does
            // not parse; the message says what went wrong.
            assert_eq!(status.code(), Code::Internal, "{status:?}");
            assert!(status.message().contains("decode"), "{status:?}");
        }

        // Mid-stream: the rows of the whole messages before the bad one are kept.
        let good = chunk(Some(&campaign.id), 0..25).encode_to_vec();
        raw.ready().await.expect("ready");
        let status = raw
            .client_streaming(
                authed(futures::stream::iter(vec![good, garbage]), &key),
                PathAndQuery::from_static("/maily.v1.CampaignService/UploadRecipients"),
                RawCodec,
            )
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        let info = status.get_details_error_info().expect("upload progress");
        assert_eq!(info.metadata["rows"], "25");
        assert_eq!(info.metadata["accepted"], "25");

        // The server serves on, and the accepted rows are sent.
        let id = CampaignId::parse(&campaign.id).expect("uuid");
        h.wait_finished(&[(id, 25)]).await;
        let counted = client
            .get_campaign_stats(authed(
                GetCampaignStatsRequest {
                    campaign_id: campaign.id.clone(),
                },
                &key,
            ))
            .await
            .expect("still serving")
            .into_inner()
            .stats
            .expect("stats");
        assert_eq!(counted.delivered, 25);
        server.stop().await;
    });
}
