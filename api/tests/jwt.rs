//! JWT validation against a real JWKS served over HTTP on 127.0.0.1, with tokens signed
//! by the test keys of `tests/fixtures/jwt/` (see its README: test keys only).
//!
//! The identity provider here is a tiny HTTP/1.1 responder whose key set and status
//! the tests change while it runs, and which counts the fetches it answers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maily_api::auth::{
    AuthError, Authenticator, JwksValidator, JwtError, JwtSettings, Principal, Scope, Subject,
};
use maily_engine::TenantId;
use maily_storage::SqliteStore;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://idp.maily.test/";
const AUDIENCE: &str = "https://api.maily.test";
const ROLES: &str = "https://maily.dev/roles";
const TENANT: &str = "https://maily.dev/tenant";
const LEEWAY: u64 = 30;

const RSA_IDP: &[u8] = include_bytes!("fixtures/jwt/rsa-idp.pem");
const RSA_IDP_PUBLIC: &[u8] = include_bytes!("fixtures/jwt/rsa-idp.pub.pem");
const EC_IDP: &[u8] = include_bytes!("fixtures/jwt/ec-idp.pem");
const RSA_ROTATED: &[u8] = include_bytes!("fixtures/jwt/rsa-rotated.pem");
const RSA_ATTACKER: &[u8] = include_bytes!("fixtures/jwt/rsa-attacker.pem");

/// A signing key and its public JWK.
struct TestKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl TestKey {
    fn rsa(kid: &'static str, pem: &[u8]) -> Self {
        TestKey {
            kid,
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(pem).expect("test RSA key"),
        }
    }

    fn ec(kid: &'static str, pem: &[u8]) -> Self {
        TestKey {
            kid,
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_pem(pem).expect("test EC key"),
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("public JWK");
        jwk.common.key_id = Some(self.kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    /// A token with `claims`, signed by this key under its own kid.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }

    /// A token with `claims`, signed by this key but naming key `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = Header {
            kid: Some(kid.to_string()),
            ..Header::new(self.alg)
        };
        jsonwebtoken::encode(&header, claims, &self.key).expect("signing a test token")
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for a tenant user of `acme` with the send and read roles.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "https://idp.maily.test/userinfo"],
        "sub": "auth0|alice",
        "iat": now(),
        "exp": now() + 600,
        ROLES: ["send", "read", "billing"],
        TENANT: "acme",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// The fake identity provider's JWKS endpoint.
struct Idp {
    url: String,
    body: Arc<Mutex<String>>,
    status: Arc<Mutex<u16>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: &[&TestKey]) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let idp = Idp {
            url,
            body: Arc::new(Mutex::new(jwks(keys))),
            status: Arc::new(Mutex::new(200)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let (body, status, fetches) = (idp.body.clone(), idp.status.clone(), idp.fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (body, status, fetches) = (body.clone(), status.clone(), fetches.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                        if request.len() > 16 * 1024 {
                            return;
                        }
                    }
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = body.lock().unwrap().clone();
                    let status = *status.lock().unwrap();
                    let response = format!(
                        "HTTP/1.1 {status} Test\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        idp
    }

    fn serve(&self, keys: &[&TestKey]) {
        *self.body.lock().unwrap() = jwks(keys);
    }

    fn fail_with(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn settings(&self) -> JwtSettings {
        JwtSettings {
            leeway: Duration::from_secs(LEEWAY),
            roles_claim: ROLES.into(),
            tenant_claim: TENANT.into(),
            operator_role: "operator".into(),
            ..JwtSettings::new(&self.url, ISSUER, AUDIENCE)
        }
    }

    fn validator(&self) -> JwksValidator {
        JwksValidator::new(self.settings()).expect("validator")
    }
}

struct Keys {
    rsa: TestKey,
    ec: TestKey,
    rotated: TestKey,
    attacker: TestKey,
}

fn keys() -> Keys {
    Keys {
        rsa: TestKey::rsa("rsa-1", RSA_IDP),
        ec: TestKey::ec("ec-1", EC_IDP),
        rotated: TestKey::rsa("rsa-2", RSA_ROTATED),
        attacker: TestKey::rsa("rsa-1", RSA_ATTACKER),
    }
}

fn alice_of_acme(scopes: &[Scope]) -> Principal {
    Principal {
        tenant: Some(TenantId::parse("acme").unwrap()),
        scopes: scopes.iter().copied().collect(),
        subject: Subject::User {
            sub: "auth0|alice".into(),
        },
    }
}

/// Whether an error is the one a case expects.
type Expect = fn(&JwtError) -> bool;

/// A token put together by hand: any header, the claims, any signature.
fn forged(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_name_their_tenant_and_scopes() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ec]).await;
    let v = idp.validator();

    let user = v.validate(&k.rsa.sign(&claims())).await.unwrap();
    assert_eq!(user, alice_of_acme(&[Scope::Send, Scope::Read]));

    let operator_claims = with(
        without(claims(), TENANT),
        ROLES,
        json!("admin read operator"),
    );
    let operator = v.validate(&k.ec.sign(&operator_claims)).await.unwrap();
    assert_eq!(
        operator,
        Principal {
            tenant: None,
            scopes: BTreeSet::from([Scope::Admin, Scope::Read]),
            subject: Subject::User {
                sub: "auth0|alice".into()
            },
        }
    );
    assert!(operator.is_operator());

    // Fails closed: without a tenant, only the operator role acts for every tenant.
    let roleless = with(without(claims(), TENANT), ROLES, json!("admin read"));
    let err = v.validate(&k.ec.sign(&roleless)).await.unwrap_err();
    assert_eq!(
        err,
        JwtError::NoTenant {
            claim: TENANT.into(),
            role: "operator".into()
        },
        "{err}"
    );
    let neither = without(without(claims(), TENANT), ROLES);
    assert!(matches!(
        v.validate(&k.rsa.sign(&neither)).await,
        Err(JwtError::NoTenant { .. })
    ));
    // A tenant's token that also claims the operator role is ambiguous: refused.
    let both = with(claims(), ROLES, json!("send operator"));
    assert!(matches!(
        v.validate(&k.rsa.sign(&both)).await,
        Err(JwtError::InvalidClaim { ref claim, .. }) if claim == ROLES
    ));

    let no_roles = v
        .validate(&k.rsa.sign(&without(claims(), ROLES)))
        .await
        .unwrap();
    assert!(
        no_roles.scopes.is_empty(),
        "authenticated, but may do nothing"
    );

    // Within the leeway both ways.
    let almost = with(
        with(claims(), "exp", json!(now() - 10)),
        "nbf",
        json!(now() + 10),
    );
    v.validate(&k.rsa.sign(&almost)).await.unwrap();
    assert_eq!(idp.fetches(), 1, "one fetch served every key");
}

#[tokio::test]
async fn each_bad_token_fails_with_its_own_error() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ec]).await;
    let v = idp.validator();
    let valid = k.rsa.sign(&claims());
    v.validate(&valid).await.unwrap();

    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let beta = with(claims(), TENANT, json!("beta"));
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(beta.to_string()),
            parts[2]
        )
    };
    let hs256_with_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(),
        &EncodingKey::from_secret(RSA_IDP_PUBLIC),
    )
    .unwrap();
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "expired beyond the leeway",
            k.rsa
                .sign(&with(claims(), "exp", json!(now() - 2 * LEEWAY as i64))),
            |e| matches!(e, JwtError::Expired),
        ),
        (
            "not yet valid",
            k.rsa
                .sign(&with(claims(), "nbf", json!(now() + 2 * LEEWAY as i64))),
            |e| matches!(e, JwtError::NotYetValid),
        ),
        (
            "wrong audience",
            k.rsa
                .sign(&with(claims(), "aud", json!("https://other.api"))),
            |e| matches!(e, JwtError::WrongAudience { .. }),
        ),
        (
            "wrong issuer",
            k.rsa
                .sign(&with(claims(), "iss", json!("https://evil.test/"))),
            |e| matches!(e, JwtError::WrongIssuer { .. }),
        ),
        (
            "signed by a key not in the JWKS, under a kid that is",
            k.attacker.sign(&claims()),
            |e| matches!(e, JwtError::BadSignature { kid } if kid == "rsa-1"),
        ),
        (
            "alg none",
            forged(json!({"alg": "none", "kid": "rsa-1"}), &claims(), b""),
            |e| matches!(e, JwtError::Algorithm(alg) if alg == "none"),
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256_with_public_key,
            |e| matches!(e, JwtError::Algorithm(alg) if alg == "HS256"),
        ),
        ("tampered payload", tampered, |e| {
            matches!(e, JwtError::BadSignature { .. })
        }),
        (
            "ES256 naming the RSA key",
            k.ec.sign_as("rsa-1", &claims()),
            |e| matches!(e, JwtError::KeyMismatch { .. }),
        ),
        (
            "no kid",
            forged(json!({"alg": "RS256"}), &claims(), b"sig"),
            |e| matches!(e, JwtError::MissingKid),
        ),
        (
            "critical header extension",
            forged(
                json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
                &claims(),
                b"sig",
            ),
            |e| matches!(e, JwtError::CriticalHeader),
        ),
        (
            "no exp",
            k.rsa.sign(&without(claims(), "exp")),
            |e| matches!(e, JwtError::MissingClaim(c) if c == "exp"),
        ),
        (
            "nbf of the wrong type (CVE-2026-25537)",
            k.rsa.sign(&with(claims(), "nbf", json!("99999999999"))),
            |e| matches!(e, JwtError::InvalidClaim { claim, .. } if claim == "nbf"),
        ),
        (
            "tenant claim that is no tenant id",
            k.rsa.sign(&with(claims(), TENANT, json!("Not A Slug"))),
            |e| matches!(e, JwtError::InvalidClaim { claim, .. } if claim == TENANT),
        ),
        (
            "roles claim of the wrong type",
            k.rsa.sign(&with(claims(), ROLES, json!({"admin": true}))),
            |e| matches!(e, JwtError::InvalidClaim { claim, .. } if claim == ROLES),
        ),
        ("not a JWT", "abc.def".to_string(), |e| {
            matches!(e, JwtError::Malformed(_))
        }),
    ];
    let mut messages = BTreeSet::new();
    for (what, token, expected) in &cases {
        let err = v.validate(token).await.expect_err(what);
        assert!(expected(&err), "{what}: got {err:?}");
        assert!(!err.is_unavailable(), "{what}");
        let public = err.public_message();
        assert!(
            ["invalid token", "token expired", "token not valid yet"].contains(&public),
            "{what}: {public}"
        );
        messages.insert(err.to_string());
    }
    // A foreign signature and a tampered payload are one failure to a verifier (the
    // signature does not verify with the named key); every other case is its own.
    assert_eq!(
        messages.len(),
        cases.len() - 1,
        "distinct errors: {messages:#?}"
    );
    assert_eq!(
        idp.fetches(),
        1,
        "no bad token made the validator refetch keys"
    );
}

#[tokio::test]
async fn unknown_kids_refresh_once_then_fail_without_hammering_the_idp() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let v = JwksValidator::new(JwtSettings {
        refresh_interval: Duration::from_millis(300),
        ..idp.settings()
    })
    .unwrap();
    v.validate(&k.rsa.sign(&claims())).await.unwrap();
    assert_eq!(idp.fetches(), 1);
    let too_soon = k.attacker.sign_as("kid-too-soon", &claims());
    assert!(matches!(
        v.validate(&too_soon).await,
        Err(JwtError::UnknownKey { .. })
    ));
    assert_eq!(
        idp.fetches(),
        1,
        "no refresh within the interval of the last fetch"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let stranger = k.attacker.sign_as("kid-nobody-knows", &claims());
    let err = v.validate(&stranger).await.unwrap_err();
    assert_eq!(
        err,
        JwtError::UnknownKey {
            kid: "kid-nobody-knows".into()
        }
    );
    assert_eq!(idp.fetches(), 2, "an unknown kid refreshes the key set");
    for i in 0..5 {
        let other = k.attacker.sign_as(&format!("kid-{i}"), &claims());
        assert!(matches!(
            v.validate(&other).await,
            Err(JwtError::UnknownKey { .. })
        ));
    }
    assert_eq!(idp.fetches(), 2, "refreshes are rate-limited");
    v.validate(&k.rsa.sign(&claims())).await.unwrap();
}

#[tokio::test]
async fn a_rotated_key_validates_after_the_automatic_refresh() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let v = JwksValidator::new(JwtSettings {
        refresh_interval: Duration::from_millis(200),
        ..idp.settings()
    })
    .unwrap();
    v.validate(&k.rsa.sign(&claims())).await.unwrap();

    // The provider publishes the next key beside the current one, then signs with it.
    idp.serve(&[&k.rsa, &k.rotated]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rotated = k.rotated.sign(&claims());
    assert_eq!(
        v.validate(&rotated).await.unwrap(),
        alice_of_acme(&[Scope::Send, Scope::Read])
    );
    assert_eq!(idp.fetches(), 2);
    v.validate(&k.rsa.sign(&claims()))
        .await
        .expect("the old key is still published");
    v.validate(&rotated).await.unwrap();
    assert_eq!(idp.fetches(), 2, "known kids need no fetch");
}

#[tokio::test]
async fn removed_keys_stop_validating_once_the_cache_ages_out() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.rotated]).await;
    let v = JwksValidator::new(JwtSettings {
        refresh_interval: Duration::from_millis(50),
        max_key_age: Duration::from_millis(150),
        ..idp.settings()
    })
    .unwrap();
    let old = k.rsa.sign(&claims());
    v.validate(&old).await.unwrap();
    idp.serve(&[&k.rotated]);
    v.validate(&old).await.expect("still cached");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        v.validate(&old).await.unwrap_err(),
        JwtError::UnknownKey {
            kid: "rsa-1".into()
        }
    );
    v.validate(&k.rotated.sign(&claims())).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_idp_is_unavailable_and_cached_keys_outlive_failed_refreshes() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    idp.fail_with(500);
    let v = JwksValidator::new(JwtSettings {
        refresh_interval: Duration::from_millis(50),
        max_key_age: Duration::from_millis(100),
        ..idp.settings()
    })
    .unwrap();
    let token = k.rsa.sign(&claims());
    let err = v.validate(&token).await.unwrap_err();
    assert!(
        matches!(&err, JwtError::KeySetUnavailable { reason, .. } if reason.contains("500")),
        "{err}"
    );
    assert!(err.is_unavailable());
    assert_eq!(
        err.public_message(),
        "authentication is temporarily unavailable"
    );
    let again = v.validate(&token).await.unwrap_err();
    assert!(again.is_unavailable(), "{again}");

    idp.fail_with(200);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(v.refresh().await.unwrap(), 1);
    v.validate(&token).await.unwrap();

    idp.fail_with(503);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fetches = idp.fetches();
    v.validate(&token)
        .await
        .expect("stale keys are used while the provider is down");
    assert_eq!(idp.fetches(), fetches + 1, "a refresh was tried");
}

#[tokio::test]
async fn the_authenticator_takes_jwts_from_the_authorization_header() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ec]).await;
    let store = Arc::new(SqliteStore::open_temp().await.unwrap());
    let auth = Authenticator::new(store, Some(idp.validator()));
    let header = format!("Bearer {}", k.ec.sign(&claims()));
    assert_eq!(
        auth.authenticate(Some(&header)).await.unwrap(),
        alice_of_acme(&[Scope::Send, Scope::Read])
    );
    let expired = format!(
        "Bearer {}",
        k.ec.sign(&with(claims(), "exp", json!(now() - 3600)))
    );
    let err = auth.authenticate(Some(&expired)).await.unwrap_err();
    assert!(matches!(err, AuthError::Token(JwtError::Expired)), "{err}");
    assert_eq!(err.public_message(), "token expired");
    assert!(!err.is_unavailable());
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let settings = JwtSettings::new("http://idp.maily.test/jwks.json", ISSUER, AUDIENCE);
    assert!(matches!(
        JwksValidator::new(settings),
        Err(JwtError::Settings(_))
    ));
}
