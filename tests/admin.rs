//! `maily serve` with `[admin] enabled`: the admin REST API on the real engine, its
//! real throttles and status. An operator's JWT (no tenant claim, the operator and
//! admin roles) is signed with the test key of `api/tests/fixtures/jwt/` and checked against a JWKS
//! served here on 127.0.0.1.

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RSA_IDP: &[u8] = include_bytes!("../api/tests/fixtures/jwt/rsa-idp.pem");
const ISSUER: &str = "https://idp.maily.test/";
const AUDIENCE: &str = "https://admin.maily.test";

/// A `maily serve` child; killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_IDP).expect("test RSA key")
}

/// Serves the JWKS of the test key; returns its URL.
async fn start_idp() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let mut jwk = Jwk::from_encoding_key(&key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rsa-1".into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let body = json!({ "keys": [jwk] }).to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

/// An operator's token: no tenant claim, the operator and admin roles.
fn operator_token() -> String {
    token_with(json!(["operator", "admin"]))
}

/// A token of the test identity provider with no tenant claim and `roles`.
fn token_with(roles: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|ops",
        "iat": now,
        "exp": now + 600,
        "https://maily.dev/roles": roles,
    });
    let header = Header {
        kid: Some("rsa-1".into()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, &claims, &key()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maily_serve_runs_the_admin_api_on_the_real_engine() {
    let jwks_url = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("maily.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\npartitions = 4\n[store]\npath = \"{}\"\n[log.file]\ndir = \"{}\"\n\
             [admin]\nenabled = true\nbind = \"127.0.0.1:{port}\"\n[auth.jwt]\njwks_url = \"{jwks_url}\"\n\
             issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n",
            dir.path().join("maily.db").display(),
            dir.path().join("log").display()
        ),
    )
    .unwrap();
    let mut serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_maily"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("maily serve starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the admin API never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = operator_token();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        async move {
            let r = req.send().await.expect("request");
            let status = r.status();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                text,
            )
        }
    };

    // Authorization fails closed: a valid token with neither a tenant nor the operator
    // role (however many other roles it has) acts for nobody.
    for roles in [json!(["admin", "read", "send"]), json!([])] {
        let r = http
            .get(format!("{base}/v1/tenants"))
            .bearer_auth(token_with(roles.clone()))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 401, "roles {roles}: {text}");
        assert!(text.contains("operator"), "names what is missing: {text}");
    }

    // A limit set over the API is the transport's at once.
    let (status, _, text) = call(
        reqwest::Method::PUT,
        "/v1/throttles/domain/example.com",
        Some(json!({"max_connections": 3, "rate": "120/m", "burst": 4})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, table, text) = call(reqwest::Method::GET, "/v1/throttles", None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        table["scopes"],
        json!([{"kind": "domain", "name": "example.com", "limit": {
            "max_connections": 3, "max_messages_per_connection": null,
            "rate": "120/m", "burst": 4
        }}])
    );
    let (status, _, text) = call(
        reqwest::Method::PUT,
        "/v1/throttles/tenant/acme",
        Some(json!({"rate": "3/d"})),
    )
    .await;
    assert_eq!(status, 422, "{text}");

    // The engine took every partition: it is alone.
    let (status, report, text) = call(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(report["owned_partitions"], json!([0, 1, 2, 3]), "{text}");
    assert_eq!(report["partitions"], 4);
    assert_eq!(report["leader"], true);
    let groups: Vec<&str> = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["group"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"sender") && groups.contains(&"analytics"),
        "{text}"
    );
    assert!(
        report["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["depth"] == 0),
        "nothing waits: {text}"
    );

    // A tenant created over the API, and its key working on the same process.
    let (status, _, text) = call(
        reqwest::Method::PUT,
        "/v1/tenants/acme",
        Some(json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let (status, created, text) = call(
        reqwest::Method::POST,
        "/v1/tenants/acme/api-keys",
        Some(json!({"name": "ops", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let tenant = http
        .get(format!("{base}/v1/tenants/acme"))
        .bearer_auth(created["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = serve.0.wait();
        (serve, status)
    })
    .await
    .unwrap();
    let status = exited.1.expect("maily serve exits");
    assert!(status.success(), "maily serve exited with {status}");
}
