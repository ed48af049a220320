//! Adversarial tests: an outsider or one tenant trying to harm another, through the
//! public interfaces of a running `maily serve` (embedded profile): gRPC for the
//! tenants, the inbound SMTP listener for reports, the recording sink for what went out.
//! Each failed on the code before its fix (docs/security.md lists the threats).

mod common;

use common::chaos::{Chaos, Plan, Profile, authed, command};
use common::header;
use common::run;
use maily_api::grpc::proto::campaign_service_client::CampaignServiceClient;
use maily_api::grpc::proto::{
    CreateCampaignRequest, GetCampaignStatsRequest, Recipient, Template, UploadRecipientsRequest,
};
use maily_smtp::ReceivedMessage;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tonic::transport::Channel;

const FBL: &str = "fbl@bounces.shop.example";

/// One embedded `maily serve` with the inbound listener on, VERP return paths and a
/// complaint address.
async fn engine(extra: &str) -> (Chaos, SocketAddr) {
    let inbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        r#"
[inbound]
enabled = true
bind = "{inbound}"
complaint_addresses = ["{FBL}"]
[verp]
domain = "bounces.shop.example"
secret = "security-test-verp-secret-0123456789"
{extra}
"#
    );
    let plan = Plan::from_env(Profile::Embedded, 1, 0, 0);
    let mut chaos = Chaos::prepare_with(plan, &config).await;
    chaos.spawn(0);
    (chaos, inbound)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates, fills and starts a campaign of `emails` with `template`; returns its id.
async fn campaign(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    template: Template,
    emails: &[String],
) -> Result<String, tonic::Status> {
    campaign_from(client, key, "news@shop.example", template, emails).await
}

/// Like [`campaign`], From `from`.
async fn campaign_from(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    from: &str,
    template: Template,
    emails: &[String],
) -> Result<String, tonic::Status> {
    let created = client
        .create_campaign(authed(
            CreateCampaignRequest {
                name: "adversarial".into(),
                from: from.into(),
                from_name: None,
                template: Some(template),
                tenant: String::new(),
            },
            key,
        ))
        .await?
        .into_inner()
        .campaign
        .expect("campaign");
    let request = UploadRecipientsRequest {
        campaign_id: created.id.clone(),
        recipients: emails
            .iter()
            .map(|e| Recipient {
                email: e.clone(),
                variables: BTreeMap::from([("first_name".to_string(), "Ann".to_string())]),
            })
            .collect(),
    };
    client
        .upload_recipients(authed(futures::stream::iter([request]), key))
        .await?;
    command(client, key, &created.id, "start").await;
    Ok(created.id)
}

/// Nested loops within the template language: passes intake, cut off by fuel.
fn spin_template() -> Template {
    Template {
        subject: "spin".into(),
        text: Some(
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}\
             {{ first_name }}{% endfor %}{% endfor %}{% endfor %}"
                .into(),
        ),
        html: None,
    }
}

/// One fuel-exhausting campaign of `n` recipients per core, From evil.example; the
/// number of cores and the campaign ids.
async fn spin_campaigns(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    n: usize,
) -> (usize, Vec<String>) {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut spinning = Vec::new();
    for w in 0..workers {
        let emails: Vec<String> = (0..n).map(|i| format!("e{w}-{i}@example.com")).collect();
        let id = campaign_from(client, key, "news@evil.example", spin_template(), &emails)
            .await
            .expect("accepted");
        spinning.push(id);
    }
    (workers, spinning)
}

fn plain(subject: &str) -> Template {
    Template {
        subject: subject.into(),
        text: Some("Hello {{ first_name }}\n".into()),
        html: None,
    }
}

/// The campaign's stats once `finished` reaches `n`.
async fn finished(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    id: &str,
    n: u64,
) -> maily_api::grpc::proto::CampaignStats {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = client
            .get_campaign_stats(authed(
                GetCampaignStatsRequest {
                    campaign_id: id.to_string(),
                },
                key,
            ))
            .await
            .expect("stats")
            .into_inner()
            .stats
            .expect("stats");
        if stats.finished >= n {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "campaign {id} never finished: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `data` to `rcpt` over SMTP from `source` (an address of 127.0.0.0/8);
/// returns the final reply.
async fn submit_from(source: &str, to: SocketAddr, rcpt: &str, data: &str) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(to).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return (0, text);
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap_or(0), text);
            }
        }
    }
    let greeting = reply(&mut r).await;
    if greeting.0 != 220 {
        return greeting;
    }
    for cmd in [
        "EHLO reporter.test\r\n".to_string(),
        "MAIL FROM:<>\r\n".to_string(),
        format!("RCPT TO:<{rcpt}>\r\n"),
        "DATA\r\n".to_string(),
    ] {
        w.write_all(cmd.as_bytes()).await.unwrap();
        let got = reply(&mut r).await;
        if got.0 >= 400 {
            return got;
        }
    }
    let body: String = data
        .lines()
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect();
    w.write_all(format!("{body}.\r\n").as_bytes())
        .await
        .unwrap();
    reply(&mut r).await
}

async fn submit(to: SocketAddr, rcpt: &str, data: &str) -> (u16, String) {
    submit_from("127.0.0.1", to, rcpt, data).await
}

/// A DSN about `recipients`, quoting the headers of `original`.
fn dsn(to: &str, recipients: &[&str], original: &ReceivedMessage) -> String {
    let lines: String = recipients
        .iter()
        .map(|r| {
            format!(
                "Final-Recipient: rfc822; {r}\nAction: failed\nStatus: 5.1.1\n\
                 Diagnostic-Code: smtp; 550 5.1.1 <{r}>: user unknown\n\n"
            )
        })
        .collect();
    let quoted: String = ["Message-ID", "X-Maily-Message-Id", "X-Maily-Campaign", "To"]
        .iter()
        .filter_map(|h| header(original, h).map(|v| format!("{h}: {v}\n")))
        .collect();
    format!(
        "From: MAILER-DAEMON@mx.example.net\nTo: {to}\nSubject: Undelivered Mail\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n\
         --B\nContent-Type: text/plain\n\nNot delivered.\n\n\
         --B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n\
         {lines}--B\nContent-Type: text/rfc822-headers\n\n{quoted}\n--B--\n"
    )
}

/// An abuse complaint about `recipient`, quoting `original`'s Maily headers.
fn arf(recipient: &str, maily_id: &str, campaign: &str) -> String {
    format!(
        "From: staff@hotmail.example\nTo: {FBL}\nSubject: complaint\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"P\"\n\n\
         --P\nContent-Type: text/plain\n\nAn abuse report.\n\
         --P\nContent-Type: message/feedback-report\n\n\
         Feedback-Type: abuse\nUser-Agent: Gen/1.0\nVersion: 1\n\n\
         --P\nContent-Type: message/rfc822\n\n\
         From: <news@shop.example>\nTo: <{recipient}>\nSubject: Hi\n\
         X-Maily-Message-Id: {maily_id}\nX-Maily-Campaign: {campaign}\n\nBuy.\n--P--\n"
    )
}

fn received_by<'a>(sent: &'a [ReceivedMessage], to: &str) -> &'a ReceivedMessage {
    sent.iter()
        .find(|m| m.rcpt_to.iter().any(|r| r == to))
        .unwrap_or_else(|| panic!("nothing sent to {to}"))
}

/// A recipient of one tenant's mail forges reports against the tenant's other
/// recipients: their own message's headers and return path, a real campaign id, and a
/// made-up message id. Nothing is suppressed, no stats move, and each forgery is
/// refused with the reason; a second campaign still reaches everyone. The one genuine
/// report (about the reporter's own message) is taken.
#[test]
fn forged_reports_suppress_no_one_and_are_refused() {
    run(async {
        let (chaos, inbound) = engine("").await;
        let key = chaos.api_key().await;
        let mut client = chaos.client().await;
        let emails: Vec<String> = ["mallory", "victim1", "victim2"]
            .iter()
            .map(|n| format!("{n}@example.com"))
            .collect();
        let id = campaign(&mut client, &key, plain("first"), &emails)
            .await
            .expect("campaign");
        finished(&mut client, &key, &id, 3).await;
        let sent = chaos.sink.received();
        let own = received_by(&sent, "mallory@example.com");
        let own_id = header(own, "X-Maily-Message-Id").expect("maily id");

        // An ARF to the complaint address naming a victim with Mallory's own message.
        let (code, text) = submit(inbound, FBL, &arf("victim1@example.com", &own_id, &id)).await;
        assert_eq!(code, 550, "{text}");
        assert!(text.contains("do not match"), "{text}");
        // A made-up message id with the real campaign.
        let made_up = uuid::Uuid::new_v4().to_string();
        let (code, text) = submit(inbound, FBL, &arf("victim2@example.com", &made_up, &id)).await;
        assert_eq!(code, 550, "{text}");
        assert!(text.contains("not ours"), "{text}");
        // A DSN to Mallory's own signed return path naming both victims.
        let (code, text) = submit(
            inbound,
            &own.mail_from,
            &dsn(
                &own.mail_from,
                &["victim1@example.com", "victim2@example.com"],
                own,
            ),
        )
        .await;
        assert_eq!(code, 550, "{text}");
        // Each victim's address in another case changes nothing either.
        let (code, text) = submit(inbound, FBL, &arf("VICTIM1@example.com", &own_id, &id)).await;
        assert_eq!(code, 550, "{text}");

        // The genuine report: Mallory complains about her own message.
        let (code, text) = submit(inbound, FBL, &arf("mallory@example.com", &own_id, &id)).await;
        assert_eq!(code, 250, "{text}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let stats = loop {
            let s = finished(&mut client, &key, &id, 3).await;
            if s.complained == 1 {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the genuine complaint never counted: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!((stats.bounced_hard, stats.complained), (0, 1), "{stats:?}");

        // A second campaign reaches both victims; Mallory, who complained, is
        // suppressed, in any case of her address.
        let again: Vec<String> = [
            "MALLORY@example.com",
            "victim1@example.com",
            "victim2@example.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let second = campaign(&mut client, &key, plain("second"), &again)
            .await
            .expect("campaign");
        let s = finished(&mut client, &key, &second, 3).await;
        assert_eq!((s.delivered, s.suppressed), (2, 1), "{s:?}");
    });
}

/// Templates that would keep a sender busy or build huge values are refused when the
/// campaign is created, naming the field and the construct; one that passes that check
/// but runs long is cut off by its fuel and its messages rejected with the reason,
/// while another tenant's campaign is delivered whole, the API answers, and SIGTERM
/// still stops the process.
#[test]
fn costly_templates_are_refused_or_cut_off_and_others_mail_flows() {
    run(async {
        let (mut chaos, _) = engine("").await;
        let evil = chaos.api_key_of("evil").await;
        let good = chaos.api_key_of("good").await;
        let mut client = chaos.client().await;
        let one = vec!["x@example.com".to_string()];
        for (text, field, construct) in [
            ("{{ 'x' * 100000000 }}", "template.text", "`*`"),
            (
                "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                "template.text",
                "`namespace()`",
            ),
            (
                "{{ first_name|replace('A', first_name) }}",
                "template.text",
                "`replace`",
            ),
        ] {
            let template = Template {
                subject: "s".into(),
                text: Some(text.into()),
                html: None,
            };
            let err = campaign_from(&mut client, &evil, "news@evil.example", template, &one)
                .await
                .expect_err("refused at intake");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            let message = err.message();
            assert!(
                message.contains(field) && message.contains(construct),
                "{message}"
            );
        }

        // Nested loops within the language: cut off by fuel at render time, one
        // campaign per runtime worker.
        let (_, spinning) = spin_campaigns(&mut client, &evil, 20).await;
        let emails: Vec<String> = (0..200).map(|i| format!("g{i}@example.com")).collect();
        let honest = campaign_from(
            &mut client,
            &good,
            "news@good.example",
            plain("honest"),
            &emails,
        )
        .await
        .expect("campaign");
        let s = finished(&mut client, &good, &honest, 200).await;
        assert_eq!(s.delivered, 200, "{s:?}");
        for id in &spinning {
            let s = finished(&mut client, &evil, id, 20).await;
            assert_eq!((s.rejected, s.delivered), (20, 0), "{s:?}");
        }
        let serve = chaos.procs[0].take().expect("running");
        let status = serve.terminate();
        assert!(status.success(), "SIGTERM: {status}");
    });
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// 2,000 connections from ten addresses that greet and then idle or trickle data:
/// the listener admits only its per-address and global limits (421 beyond), memory
/// stays under the stated bound, and a genuine report from another address still gets
/// through.
#[test]
fn idle_and_trickling_connections_cannot_exhaust_the_listener() {
    run(async {
        let (chaos, inbound) = engine("").await;
        let key = chaos.api_key().await;
        let mut client = chaos.client().await;
        let id = campaign(
            &mut client,
            &key,
            plain("one"),
            &["ann@example.com".to_string()],
        )
        .await
        .expect("campaign");
        finished(&mut client, &key, &id, 1).await;
        let sent = chaos.sink.received();
        let ann = received_by(&sent, "ann@example.com").clone();
        let pid = chaos.procs[0].as_ref().unwrap().child.id();
        let before = rss_kib(pid);

        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..2000u32 {
            let source = format!("127.0.0.{}", 2 + i % 10);
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let Ok(mut stream) = socket.connect(inbound).await else {
                refused += 1;
                continue;
            };
            let mut greeting = [0u8; 3];
            use tokio::io::AsyncReadExt;
            if stream.read_exact(&mut greeting).await.is_err() || &greeting == b"421" {
                refused += 1;
                continue;
            }
            // Half of them start a message and trickle it.
            if i % 2 == 0 {
                let _ = stream
                    .write_all(b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<fbl@bounces.shop.example>\r\nDATA\r\nSubject: slo")
                    .await;
            }
            held.push(stream);
        }
        // 10 addresses × 20 connections each are admitted, the rest refused.
        assert_eq!(held.len(), 200, "admitted");
        assert_eq!(refused, 1800, "refused with 421");
        let (code, text) = submit(
            inbound,
            &ann.mail_from,
            &dsn(&ann.mail_from, &["ann@example.com"], &ann),
        )
        .await;
        assert_eq!(code, 250, "a genuine report still gets through: {text}");
        let after = rss_kib(pid);
        // The stated bound: max_concurrent_messages × max_message_size (32 × 10 MiB) +
        // max_connections × 64 KiB.
        let bound = 32 * 10 * 1024 + 500 * 64;
        println!(
            "inbound listener: {} held, {refused} refused, RSS grew {} KiB (bound {bound} KiB)",
            held.len(),
            after.saturating_sub(before)
        );
        assert!(
            after.saturating_sub(before) < bound,
            "memory grew by {} KiB, over the bound of {bound} KiB",
            after.saturating_sub(before)
        );
        drop(held);
    });
}

/// One tenant cannot send From another tenant's domain, nor from a domain nobody
/// verified: intake refuses it over gRPC, naming the field and the domain.
#[test]
fn a_tenant_cannot_send_from_another_tenants_domain() {
    run(async {
        let (chaos, _) = engine("").await;
        let acme = chaos.api_key().await;
        let mallory = chaos.api_key_of("mallory").await;
        let mut client = chaos.client().await;
        let one = vec!["x@example.com".to_string()];
        for from in [
            "news@shop.example",
            "billing@news.shop.example",
            "news@unregistered.example",
        ] {
            let err = campaign_from(&mut client, &mallory, from, plain("phish"), &one)
                .await
                .expect_err("refused at intake");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{from}: {err:?}");
            assert!(
                err.message().starts_with("from:")
                    && err.message().contains("is not a sending domain"),
                "{from}: {}",
                err.message()
            );
        }
        // Each sends From its own, and acme from a subdomain of its own too.
        campaign_from(
            &mut client,
            &mallory,
            "news@mallory.example",
            plain("ok"),
            &one,
        )
        .await
        .expect("own domain");
        campaign_from(
            &mut client,
            &acme,
            "news@eu.shop.example",
            plain("ok"),
            &one,
        )
        .await
        .expect("subdomain of its own");
    });
}

/// A campaign whose sending domain its tenant removed (over the admin API) after
/// creating it sends nothing: each message is rejected with the reason.
#[test]
fn a_removed_domain_stops_the_campaigns_that_used_it() {
    run(async {
        let admin_port = free_port();
        let (chaos, _) = engine(&format!(
            "[admin]\nenabled = true\nbind = \"127.0.0.1:{admin_port}\"\n"
        ))
        .await;
        let send = chaos.api_key_of("mallory").await;
        let admin = chaos
            .key_of("mallory", &[maily_api::auth::Scope::Admin])
            .await;
        let mut client = chaos.client().await;
        let emails: Vec<String> = (0..20).map(|i| format!("m{i}@example.com")).collect();
        let created = client
            .create_campaign(authed(
                CreateCampaignRequest {
                    name: "later".into(),
                    from: "news@mallory.example".into(),
                    from_name: None,
                    template: Some(plain("later")),
                    tenant: String::new(),
                },
                &send,
            ))
            .await
            .expect("created")
            .into_inner()
            .campaign
            .expect("campaign");
        client
            .upload_recipients(authed(
                futures::stream::iter([UploadRecipientsRequest {
                    campaign_id: created.id.clone(),
                    recipients: emails
                        .iter()
                        .map(|e| Recipient {
                            email: e.clone(),
                            variables: BTreeMap::from([(
                                "first_name".to_string(),
                                "Ann".to_string(),
                            )]),
                        })
                        .collect(),
                }]),
                &send,
            ))
            .await
            .expect("uploaded");
        let http = reqwest::Client::new();
        let removed = http
            .delete(format!(
                "http://127.0.0.1:{admin_port}/v1/tenants/mallory/domains/mallory.example"
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("admin API answers");
        assert_eq!(removed.status(), 204, "{}", removed.text().await.unwrap());
        command(&mut client, &send, &created.id, "start").await;
        let s = finished(&mut client, &send, &created.id, 20).await;
        assert_eq!((s.rejected, s.delivered), (20, 0), "{s:?}");
        assert!(
            chaos
                .sink
                .received()
                .iter()
                .all(|m| !m.rcpt_to.iter().any(|r| emails.contains(r))),
            "nothing went out From the removed domain"
        );
    });
}

/// A POST to the admin API at `port` with `key`; the status and the JSON body.
async fn admin_post(
    port: u16,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("admin API answers");
    let status = answer.status().as_u16();
    let text = answer.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(text.into()))
}

/// A tenant registers a domain over the admin API and gets its own DKIM key; the
/// domain is verified only once DNS shows the ownership and key records (an outside
/// tenant cannot skip that), and its mail then leaves signed with that key, as
/// `d=<its domain>`, which an independent verifier (dkimpy) accepts with the published
/// record, with its return path on the tenant's own `bounces.` domain once that MX is
/// seen (a bounce sent there is taken). Another tenant's mail is never signed with it.
#[test]
fn a_domain_is_verified_in_dns_and_its_mail_signed_with_the_tenants_own_key() {
    run(async {
        let zone = common::dns::Zone::start("beta-shop.example").await;
        let admin_port = free_port();
        let tracking_port = free_port();
        // The first two lines land in [verp]: tenants' return paths on; and their
        // tracking hosts.
        let (chaos, inbound) = engine(&format!(
            "tenant_label = \"bounces\"\nmx_host = \"mx.maily.test\"\n\
             [admin]\nenabled = true\nbind = \"127.0.0.1:{admin_port}\"\n\
             [intake]\ndns_servers = [\"{}\"]\n\
             [tracking]\nbase_url = \"https://t.maily.test\"\ntenant_label = \"track\"\n\
             secret = \"00112233445566778899aabbccddeeff\"\nlisten = true\n\
             bind = \"127.0.0.1:{tracking_port}\"\n",
            zone.addr
        ))
        .await;
        use maily_api::auth::Scope;
        let mut client = chaos.client().await;
        let beta = chaos
            .key_of("beta", &[Scope::Admin, Scope::Send, Scope::Read])
            .await;
        let acme = chaos.api_key().await;
        let (status, added) = admin_post(
            admin_port,
            &beta,
            "/v1/tenants/beta/domains",
            serde_json::json!({"domain": "beta-shop.example"}),
        )
        .await;
        assert_eq!(status, 201, "{added}");
        let record = |purpose: &str| {
            added["dns"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["purpose"] == purpose)
                .unwrap_or_else(|| panic!("a {purpose} record in {added}"))
                .clone()
        };
        let (ownership, dkim) = (record("ownership"), record("dkim"));
        let return_path = record("return-path");
        assert_eq!(
            (
                &return_path["type"],
                &return_path["name"],
                &return_path["value"]
            ),
            (
                &serde_json::json!("MX"),
                &serde_json::json!("bounces.beta-shop.example"),
                &serde_json::json!("10 mx.maily.test")
            ),
            "{return_path}"
        );
        let dkim_name = dkim["name"].as_str().unwrap().to_string();
        let dkim_value = dkim["value"].as_str().unwrap().to_string();
        assert!(
            dkim_name.ends_with("._domainkey.beta-shop.example")
                && dkim_value.starts_with("v=DKIM1; k=rsa; p="),
            "{dkim}"
        );
        assert!(
            !added.to_string().contains("PRIVATE KEY"),
            "the private key is never shown: {added}"
        );
        let verify = "/v1/tenants/beta/domains/beta-shop.example/verify";

        // Nothing published: refused, naming both records.
        let (status, refused) = admin_post(admin_port, &beta, verify, serde_json::json!({})).await;
        assert_eq!(status, 422, "{refused}");
        let detail = refused["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("_maily.beta-shop.example") && detail.contains(&dkim_name),
            "{refused}"
        );
        // A tenant cannot vouch for its own domain.
        let (status, forced) = admin_post(
            admin_port,
            &beta,
            &format!("{verify}?force=true"),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 403, "{forced}");
        // Pending: nothing may be sent From it.
        let one = vec!["ann@example.com".to_string()];
        let early = campaign_from(
            &mut client,
            &beta,
            "news@beta-shop.example",
            plain("x"),
            &one,
        )
        .await
        .expect_err("pending domain");
        assert!(early.message().contains("not verified"), "{early:?}");

        // Ownership published, and a key that is not this one: still refused.
        zone.publish(
            ownership["name"].as_str().unwrap(),
            ownership["value"].as_str().unwrap(),
        )
        .await;
        zone.publish(
            &dkim_name,
            "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAother",
        )
        .await;
        let (status, refused) = admin_post(admin_port, &beta, verify, serde_json::json!({})).await;
        assert_eq!(status, 422, "{refused}");
        let detail = refused["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&dkim_name)
                && detail.contains("different")
                && !detail.contains("_maily.beta-shop.example"),
            "{refused}"
        );
        // The key published too (as the several strings a long record takes): verified,
        // though without its return-path MX mail returns to the engine's own domain.
        zone.publish(&dkim_name, &dkim_value).await;
        let (status, verified) = admin_post(admin_port, &beta, verify, serde_json::json!({})).await;
        assert_eq!(status, 200, "{verified}");
        assert_eq!(verified["status"], "verified", "{verified}");
        assert_eq!(
            verified["return_path"],
            serde_json::Value::Null,
            "{verified}"
        );
        zone.publish_mx("bounces.beta-shop.example", "mx.maily.test")
            .await;
        zone.publish_cname("track.beta-shop.example", "t.maily.test")
            .await;
        let (status, verified) = admin_post(admin_port, &beta, verify, serde_json::json!({})).await;
        assert_eq!(status, 200, "{verified}");
        assert_eq!(
            verified["return_path"], "bounces.beta-shop.example",
            "{verified}"
        );
        assert_eq!(
            verified["tracking_host"], "track.beta-shop.example",
            "{verified}"
        );
        assert!(
            verified["dns"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "published"),
            "{verified}"
        );

        // Mail From it (and a subdomain) is signed with the tenant's key; acme's is not.
        let to_beta: Vec<String> = (0..3).map(|i| format!("b{i}@example.com")).collect();
        let id = campaign_from(
            &mut client,
            &beta,
            "news@beta-shop.example",
            plain("Hi"),
            &to_beta,
        )
        .await
        .expect("verified domain");
        let sub = vec!["sub@example.com".to_string()];
        let sub_id = campaign_from(
            &mut client,
            &beta,
            "news@eu.beta-shop.example",
            plain("Hi"),
            &sub,
        )
        .await
        .expect("subdomain of a verified domain");
        let to_acme = vec!["a0@example.com".to_string()];
        let acme_id = campaign(&mut client, &acme, plain("Hi"), &to_acme)
            .await
            .expect("acme's campaign");
        finished(&mut client, &beta, &id, 3).await;
        finished(&mut client, &beta, &sub_id, 1).await;
        finished(&mut client, &acme, &acme_id, 1).await;
        let sent = chaos.sink.received();
        for to in to_beta.iter().chain(&sub) {
            let m = received_by(&sent, to);
            let text = String::from_utf8_lossy(&m.data);
            assert!(
                text.starts_with("DKIM-Signature: v=1; a=rsa-sha256;")
                    && text.contains("d=beta-shop.example;")
                    && text.contains(&format!("s={};", dkim_name.split('.').next().unwrap())),
                "{text}"
            );
            assert!(
                common::dkimpy_verifies(&m.data, &dkim_name, &dkim_value),
                "dkimpy accepts {to}'s message with the published record"
            );
            assert!(
                m.mail_from.ends_with("@bounces.beta-shop.example"),
                "{to}: return path {}",
                m.mail_from
            );
            // Its unsubscribe link is on the tenant's tracking host, and the
            // listener (behind that CNAME) takes it.
            let link = header(m, "List-Unsubscribe").unwrap_or_default();
            let path = link
                .split("<https://track.beta-shop.example/")
                .nth(1)
                .and_then(|rest| rest.split('>').next())
                .unwrap_or_else(|| panic!("{to}: List-Unsubscribe {link:?}"));
            let page = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{tracking_port}/{path}"))
                .header("host", "track.beta-shop.example")
                .send()
                .await
                .expect("tracking listener answers");
            assert_eq!(page.status(), 200, "{to}: /{path}");
        }
        // A bounce that comes back to the tenant's return path is taken.
        let bounced = received_by(&sent, &to_beta[0]);
        let (code, text) = submit(
            inbound,
            &bounced.mail_from,
            &dsn(&bounced.mail_from, &[&to_beta[0]], bounced),
        )
        .await;
        assert_eq!(code, 250, "{text}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = finished(&mut client, &beta, &id, 3).await;
            if s.bounced_hard == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the bounce never counted: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let acme_mail =
            String::from_utf8_lossy(&received_by(&sent, "a0@example.com").data).to_string();
        assert!(
            !acme_mail.contains("d=beta-shop.example") && !acme_mail.contains("beta-shop"),
            "another tenant's mail never uses beta's key nor hosts: {acme_mail}"
        );
        assert!(
            acme_mail.contains("<https://t.maily.test/u/"),
            "{acme_mail}"
        );

        // Acme's (signed) return path moved onto beta's return-path domain is not
        // taken: that domain returns beta's mail only. On its own domain it is.
        let acme_path = received_by(&sent, "a0@example.com").mail_from.clone();
        let (local, home) = acme_path.rsplit_once('@').unwrap();
        assert_eq!(home, "bounces.shop.example");
        let moved = format!("{local}@bounces.beta-shop.example");
        let bare_dsn = |to: &str| {
            format!(
                "From: MAILER-DAEMON@mx.example.net\nTo: {to}\nSubject: Undelivered Mail\n\
                 MIME-Version: 1.0\n\
                 Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n\
                 --B\nContent-Type: text/plain\n\nNot delivered.\n\n\
                 --B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n\
                 Final-Recipient: rfc822; a0@example.com\nAction: failed\nStatus: 5.1.1\n\
                 Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n--B--\n"
            )
        };
        let (code, text) = submit(inbound, &moved, &bare_dsn(&moved)).await;
        assert_eq!(code, 550, "{text}");
        let (code, text) = submit(inbound, &acme_path, &bare_dsn(&acme_path)).await;
        assert_eq!(code, 250, "{text}");
    });
}

/// How long `n` recipients of a fresh campaign of `key` take from start to finished.
async fn delivery_time(
    client: &mut CampaignServiceClient<Channel>,
    key: &str,
    from: &str,
    tag: &str,
    n: usize,
) -> Duration {
    let emails: Vec<String> = (0..n).map(|i| format!("{tag}{i}@example.com")).collect();
    let started = Instant::now();
    let id = campaign_from(client, key, from, plain(tag), &emails)
        .await
        .expect("campaign");
    let s = finished(client, key, &id, n as u64).await;
    assert_eq!(s.delivered, n as u64, "{s:?}");
    started.elapsed()
}

/// One tenant's campaigns whose template exhausts its fuel for every recipient, one
/// per core: after a few renders per partition their messages are rejected without
/// rendering (counted on `/metrics`), every one of them ends rejected, and another
/// tenant's campaign is delivered whole beside them. Prints that tenant's delivery
/// time alone and beside them; `scripts/noisy-neighbour.sh` runs it with more
/// recipients for the figure in docs/security.md (nothing here is a timing threshold).
#[test]
fn costly_campaigns_stop_rendering_and_a_neighbours_mail_flows_beside_them() {
    let n: usize = std::env::var("MAILY_NOISY_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    run(async move {
        let (chaos, _) = engine("").await;
        let metrics_port = chaos.metrics_ports[0];
        let evil = chaos.api_key_of("evil").await;
        let good = chaos.api_key_of("good").await;
        let mut client = chaos.client().await;
        let from = "news@good.example";
        // Warm-up, then the neighbour alone.
        delivery_time(&mut client, &good, from, "w", 200).await;
        let alone = delivery_time(&mut client, &good, from, "a", n).await;
        let (workers, spinning) = spin_campaigns(&mut client, &evil, n / 10).await;
        let beside = delivery_time(&mut client, &good, from, "b", n).await;
        let mut rejected = 0;
        for id in &spinning {
            let s = finished(&mut client, &evil, id, (n / 10) as u64).await;
            assert_eq!((s.rejected, s.delivered), ((n / 10) as u64, 0), "{s:?}");
            rejected += s.rejected;
        }
        let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        let skipped: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("maily_sender_render_skipped_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(
            skipped > 0.0 && skipped < rejected as f64,
            "most messages rejected unrendered, a few rendered first: {skipped} of {rejected}"
        );
        println!(
            "noisy neighbour: {n} recipients alone {:.2} s, beside {workers} fuel-exhausting \
             campaigns ({rejected} messages rejected, {skipped} unrendered) {:.2} s, ratio {:.2}",
            alone.as_secs_f64(),
            beside.as_secs_f64(),
            beside.as_secs_f64() / alone.as_secs_f64()
        );
    });
}

/// Runs `maily domain <args> --config <the engine's>`; its standard output.
fn domain_cli(chaos: &Chaos, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maily"))
        .arg("domain")
        .args(args)
        .arg("--config")
        .arg(&chaos.config)
        .output()
        .expect("maily runs");
    assert!(
        out.status.success(),
        "maily domain {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// An operator registers a tenant's domain from the CLI, which prints the records to
/// publish; once they are in DNS, `maily domain verify` verifies it, and the tenant's
/// mail from it leaves signed with the key the CLI made.
#[test]
fn the_cli_registers_a_domain_shows_its_records_and_verifies_it_in_dns() {
    run(async {
        let zone = common::dns::Zone::start("cli-shop.example").await;
        let (chaos, _) = engine(&format!("[intake]\ndns_servers = [\"{}\"]\n", zone.addr)).await;
        let mut client = chaos.client().await;
        let key = chaos.api_key_of("clitenant").await;
        let added: serde_json::Value = serde_json::from_str(&domain_cli(
            &chaos,
            &[
                "add",
                "clitenant",
                "cli-shop.example",
                "--ed25519",
                "--json",
            ],
        ))
        .expect("JSON");
        let added = &added[0];
        assert_eq!(added["status"], "pending", "{added}");
        let records = added["dns"].as_array().unwrap();
        assert_eq!(records.len(), 2, "{added}");
        let text = domain_cli(&chaos, &["list", "clitenant"]);
        assert!(
            text.contains("cli-shop.example pending") && text.contains("_maily.cli-shop.example"),
            "{text}"
        );
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_maily"))
            .args([
                "domain",
                "verify",
                "clitenant",
                "cli-shop.example",
                "--config",
            ])
            .arg(&chaos.config)
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(
            why.contains("is not verified") && why.contains("missing"),
            "{why}"
        );
        for r in records {
            zone.publish(r["name"].as_str().unwrap(), r["value"].as_str().unwrap())
                .await;
        }
        let text = domain_cli(&chaos, &["verify", "clitenant", "cli-shop.example"]);
        assert!(
            text.starts_with("cli-shop.example verified") && text.contains("[published]"),
            "{text}"
        );
        let dkim = records.iter().find(|r| r["purpose"] == "dkim").unwrap();
        let to = vec!["c0@example.com".to_string()];
        let id = campaign_from(&mut client, &key, "news@cli-shop.example", plain("Hi"), &to)
            .await
            .expect("verified from the CLI");
        finished(&mut client, &key, &id, 1).await;
        let m = received_by(&chaos.sink.received(), "c0@example.com").clone();
        assert!(
            common::dkimpy_verifies(
                &m.data,
                dkim["name"].as_str().unwrap(),
                dkim["value"].as_str().unwrap()
            ),
            "signed with the key the CLI made"
        );
    });
}
