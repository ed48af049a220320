//! The tracking listener end to end: the real HTTP listener on a port-0 socket, a real
//! HTTP client, the embedded event log and a fresh SQLite store per test.

use maily_api::tracking::{self, TrackingDeps};
use maily_engine::ports::prelude::*;
use maily_engine::ports::{EventLog, HotState};
use maily_engine::records::{self, EventRecord, topics};
use maily_engine::tracking::{ClickToken, OpenToken, TokenKey, TokenKeys, UnsubscribeToken};
use maily_engine::{CampaignId, EmailAddress, EventKind, MessageId, TenantId, Timestamp};
use maily_eventlog::MemoryLog;
use maily_storage::{MemoryHotState, SqliteStore};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use std::sync::Arc;
use std::time::Duration;

const PARTITIONS: u32 = 4;
const TARGET: &str = "https://shop.example/p?a=1&b=%20x#top";

struct Listener {
    base: String,
    http: reqwest::Client,
    keys: TokenKeys,
    log: Arc<MemoryLog>,
    store: Arc<SqliteStore>,
    hot: Arc<MemoryHotState>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new(7, [7u8; 32]).unwrap(), vec![]).unwrap()
}

async fn start() -> Listener {
    let log = Arc::new(MemoryLog::new(1000));
    log.ensure_topic(topics::EVENTS, PARTITIONS).await.unwrap();
    let store = Arc::new(
        SqliteStore::open_temp()
            .await
            .expect("temporary sqlite store"),
    );
    let hot = Arc::new(MemoryHotState::new());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let deps = TrackingDeps {
        keys: keys(),
        log: log.clone(),
        store: store.clone(),
        hot: Some(hot.clone()),
        events_per_ip_per_minute: 50,
        events_max_age: Duration::from_secs(30 * 86_400),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tracking::serve(listener, deps, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Listener {
        base,
        http,
        keys: keys(),
        log,
        store,
        hot,
        stop,
        task,
    }
}

impl Listener {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn one_click(&self, path: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap()
    }

    /// Every event in the log, over all partitions.
    async fn events(&self) -> Vec<EventRecord> {
        let mut all = Vec::new();
        for p in 0..PARTITIONS {
            let records = self
                .log
                .fetch(topics::EVENTS, p, 0, 1000, Duration::ZERO)
                .await
                .unwrap();
            for r in records {
                let e: EventRecord = records::decode("event", &r.payload).unwrap();
                assert_eq!(r.key, e.campaign.to_string().into_bytes());
                all.push(e);
            }
        }
        all
    }

    async fn shut_down(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().expect("listener stops cleanly");
    }
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn recipient() -> EmailAddress {
    EmailAddress::parse("ann.lee+news@example.org").unwrap()
}

fn open_token() -> OpenToken {
    OpenToken {
        message: MessageId::new(),
        campaign: CampaignId::new(),
        tenant: tenant(),
        recipient: recipient(),
    }
}

fn click_token(url: &str) -> ClickToken {
    let o = open_token();
    ClickToken {
        message: o.message,
        campaign: o.campaign,
        tenant: o.tenant,
        recipient: o.recipient,
        link: 2,
        url: url.into(),
    }
}

fn unsubscribe_token() -> UnsubscribeToken {
    UnsubscribeToken {
        tenant: tenant(),
        campaign: CampaignId::new(),
        recipient: recipient(),
        message: MessageId::new(),
    }
}

/// The token with one character in the middle changed to another base64url one.
fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn an_open_answers_a_gif_and_records_opened() {
    let l = start().await;
    let t = open_token();
    let r = l.get(&format!("/o/{}", l.keys.sign_open(&t))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "image/gif");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let body = r.bytes().await.unwrap();
    assert!(body.starts_with(b"GIF89a") && body.len() == 43);
    let events = l.events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Opened);
    assert_eq!(
        (e.message_id, e.campaign, &e.tenant, &e.recipient),
        (t.message, t.campaign, &t.tenant, &t.recipient)
    );
    l.shut_down().await;
}

#[tokio::test]
async fn a_click_redirects_to_the_signed_url_only_and_records_clicked() {
    let l = start().await;
    let t = click_token(TARGET);
    let token = l.keys.sign_click(&t).unwrap();
    // Whatever the request says, the redirect goes where the token says.
    let r = l
        .get(&format!(
            "/c/{token}?url=https://evil.example/&next=//evil.example"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()[LOCATION], TARGET);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let events = l.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Clicked { url: TARGET.into() });
    assert_eq!(
        (events[0].message_id, &events[0].recipient),
        (t.message, &t.recipient)
    );
    l.shut_down().await;
}

#[tokio::test]
async fn refused_tokens_answer_400_and_record_nothing() {
    let l = start().await;
    let open = l.keys.sign_open(&open_token());
    let click = l.keys.sign_click(&click_token(TARGET)).unwrap();
    let unsubscribe = l.keys.sign_unsubscribe(&unsubscribe_token());
    let other_key = TokenKeys::new(TokenKey::new(9, [9u8; 32]).unwrap(), vec![]).unwrap();
    let same_id_other_secret =
        TokenKeys::new(TokenKey::new(7, [8u8; 32]).unwrap(), vec![]).unwrap();
    let gets = [
        format!("/o/{}", tampered(&open)),
        format!("/c/{}", tampered(&click)),
        format!("/u/{}", tampered(&unsubscribe)),
        format!("/o/{click}"),
        format!("/u/{click}"),
        format!("/c/{open}"),
        format!("/o/{}", other_key.sign_open(&open_token())),
        format!("/o/{}", same_id_other_secret.sign_open(&open_token())),
        "/o/garbage!".to_string(),
        "/c/not-a-token".to_string(),
        format!("/u/{}", "A".repeat(5000)),
    ];
    for path in &gets {
        let r = l.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "GET {path}");
        assert!(r.headers().get(LOCATION).is_none(), "GET {path}");
        let text = r.text().await.unwrap();
        assert!(text.starts_with("invalid link: "), "GET {path}: {text}");
    }
    let posts = [
        format!("/u/{}", tampered(&unsubscribe)),
        format!("/u/{click}"),
        format!("/u/{open}"),
        "/u/garbage".to_string(),
    ];
    for path in &posts {
        let r = l.one_click(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "POST {path}");
    }
    assert_eq!(l.events().await, []);
    assert_eq!(l.store.suppressions(&tenant()).await.unwrap(), []);
    assert!(!l.hot.is_suppressed(&tenant(), &recipient()).await.unwrap());
    l.shut_down().await;
}

#[tokio::test]
async fn the_unsubscribe_page_asks_and_records_nothing() {
    let l = start().await;
    let t = UnsubscribeToken {
        recipient: EmailAddress::parse("o'neil&co@example.org").unwrap(),
        ..unsubscribe_token()
    };
    let r = l.get(&format!("/u/{}", l.keys.sign_unsubscribe(&t))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(html.contains("o&#39;neil&amp;co@example.org"), "{html}");
    assert_eq!(l.events().await, []);
    assert!(
        !l.store
            .is_suppressed(&t.tenant, &t.recipient)
            .await
            .unwrap()
    );
    l.shut_down().await;
}

#[tokio::test]
async fn one_click_unsubscribes_and_repeating_it_is_harmless() {
    let l = start().await;
    let t = unsubscribe_token();
    let path = format!("/u/{}", l.keys.sign_unsubscribe(&t));
    for _ in 0..2 {
        let r = l.one_click(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.text().await.unwrap().contains("ann.lee+news@example.org"));
    }
    assert_eq!(
        l.store.suppressions(&t.tenant).await.unwrap(),
        [(
            t.recipient.clone(),
            tracking::SUPPRESSION_REASON.to_string()
        )]
    );
    assert!(l.hot.is_suppressed(&t.tenant, &t.recipient).await.unwrap());
    // One event per request; analytics counts a kind once per message.
    let events = l.events().await;
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e.kind, EventKind::Unsubscribed);
        assert_eq!(
            (e.message_id, e.campaign, &e.recipient),
            (t.message, t.campaign, &t.recipient)
        );
    }
    // Another tenant's list is untouched.
    let beta = TenantId::parse("beta").unwrap();
    assert!(!l.store.is_suppressed(&beta, &t.recipient).await.unwrap());
    l.shut_down().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_unsubscribes_nobody() {
    let l = start().await;
    let t = unsubscribe_token();
    let r = l
        .http
        .post(format!("{}/u/{}", l.base, l.keys.sign_unsubscribe(&t)))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("x".repeat(tracking::MAX_BODY_BYTES + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        !l.store
            .is_suppressed(&t.tenant, &t.recipient)
            .await
            .unwrap()
    );
    assert_eq!(l.events().await, []);
    l.shut_down().await;
}

#[tokio::test]
async fn a_log_outage_answers_503() {
    let l = start().await;
    l.log.close();
    let r = l
        .get(&format!("/o/{}", l.keys.sign_open(&open_token())))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = l
        .get(&format!(
            "/c/{}",
            l.keys.sign_click(&click_token(TARGET)).unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get(LOCATION).is_none());
    // The suppression is kept; the recipient's retry records the event.
    let t = unsubscribe_token();
    let r = l
        .one_click(&format!("/u/{}", l.keys.sign_unsubscribe(&t)))
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        l.store
            .is_suppressed(&t.tenant, &t.recipient)
            .await
            .unwrap()
    );
    l.shut_down().await;
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let l = start().await;
    assert_eq!(l.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(l.get("/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(l.get("/x/abc").await.status(), StatusCode::NOT_FOUND);
    let r = l
        .http
        .delete(format!("{}/u/abc", l.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    l.shut_down().await;
}

/// Replaying a link or loading a pixel again is answered every time but recorded once
/// per message (and link); one address cannot record more than its allowance a minute
/// (50 here), though every request is still answered.
#[tokio::test]
async fn repeats_and_floods_are_answered_but_not_recorded() {
    let l = start().await;
    let open = l.keys.sign_open(&open_token());
    let click = l.keys.sign_click(&click_token(TARGET)).unwrap();
    for _ in 0..5 {
        assert_eq!(l.get(&format!("/o/{open}")).await.status(), StatusCode::OK);
        assert_eq!(
            l.get(&format!("/c/{click}")).await.status(),
            StatusCode::FOUND
        );
    }
    let events = l.events().await;
    assert_eq!(events.len(), 2, "one open and one click: {events:?}");
    for _ in 0..100 {
        let open = l.keys.sign_open(&open_token());
        assert_eq!(l.get(&format!("/o/{open}")).await.status(), StatusCode::OK);
    }
    assert_eq!(
        l.events().await.len(),
        50,
        "the address's allowance of 50 a minute"
    );
    l.shut_down().await;
}

/// Links of mail older than `events_max_age` still work (the pixel, the redirect) but their opens and clicks are not recorded: an old token cannot be
/// replayed into a campaign's figures.
#[tokio::test]
async fn old_links_work_but_their_opens_and_clicks_are_not_recorded() {
    let l = start().await;
    let long_ago = Timestamp(Timestamp::now().0 - 31 * 86_400_000);
    let open = l.keys.sign_open_at(&open_token(), long_ago);
    let r = l.get(&format!("/o/{open}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let click = l
        .keys
        .sign_click_at(&click_token(TARGET), long_ago)
        .unwrap();
    let r = l.get(&format!("/c/{click}")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()[LOCATION], TARGET);
    assert_eq!(l.events().await, [], "expired tokens record nothing");
    // A token made a day ago is within the age and recorded.
    let recent = Timestamp(Timestamp::now().0 - 86_400_000);
    let r = l
        .get(&format!(
            "/o/{}",
            l.keys.sign_open_at(&open_token(), recent)
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let events = l.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Opened);
    l.shut_down().await;
}
