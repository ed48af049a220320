//! API keys end to end on the real stores: generated, stored (hash only),
//! authenticated, refused with the right error, revoked by their tenant only.
//!
//! Every check runs on a fresh SQLite file and on a fresh Postgres schema
//! (`MAILY_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`).

use maily_api::auth::{self, AuthError, Authenticator, Principal, Scope, Subject, keys};
use maily_engine::ports::Store;
use maily_engine::{TenantId, Timestamp};
use maily_storage::{PostgresStore, SqliteStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

async fn sqlite() -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open_temp()
            .await
            .expect("temporary sqlite store"),
    )
}

async fn postgres() -> Arc<dyn Store> {
    let url = std::env::var("MAILY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    Arc::new(
        PostgresStore::connect_temp(&url)
            .await
            .expect("postgres store on a fresh schema (is MAILY_TEST_POSTGRES reachable?)"),
    )
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

/// Two tenants, and a send+read key of `acme` stored; returns the full key.
async fn with_key(store: &dyn Store) -> (String, String) {
    store.upsert_tenant(&tenant("acme"), "Acme").await.unwrap();
    store.upsert_tenant(&tenant("beta"), "Beta").await.unwrap();
    let (record, plain) =
        keys::generate(&tenant("acme"), "ci", &[Scope::Send, Scope::Read]).unwrap();
    store.create_api_key(&record).await.unwrap();
    (record.id, plain.into_string())
}

/// The key with its secret replaced by another well-formed one.
fn with_wrong_secret(key: &str) -> String {
    let (head, secret) = key.split_at(key.len() - 43);
    // 42 characters and a last one whose unused low bits are zero, as base64url wants.
    let other = if secret.starts_with('B') { "C" } else { "B" };
    format!("{head}{}A", other.repeat(42))
}

async fn created_key_authenticates_with_its_tenant_and_scopes(store: Arc<dyn Store>) {
    let (id, key) = with_key(store.as_ref()).await;
    let principal = keys::authenticate(store.as_ref(), &key).await.unwrap();
    assert_eq!(
        principal,
        Principal {
            tenant: Some(tenant("acme")),
            scopes: BTreeSet::from([Scope::Send, Scope::Read]),
            subject: Subject::ApiKey { id: id.clone() },
        }
    );
    assert!(principal.authorize(Scope::Send, &tenant("acme")).is_ok());
    assert!(principal.authorize(Scope::Admin, &tenant("acme")).is_err());
    assert!(principal.authorize(Scope::Send, &tenant("beta")).is_err());
    let stored = store.api_key(&id).await.unwrap().unwrap();
    assert!(
        stored.last_used_at.is_some(),
        "authenticate records the use"
    );

    let via_header = Authenticator::new(store.clone(), None)
        .authenticate(Some(&format!("Bearer {key}")))
        .await
        .unwrap();
    assert_eq!(via_header, principal);
}

async fn only_the_hash_of_the_secret_is_stored(store: Arc<dyn Store>) {
    let (id, key) = with_key(store.as_ref()).await;
    let secret = &key[key.len() - 43..];
    let stored = store.api_key(&id).await.unwrap().unwrap();
    let everything = format!(
        "{} {} {} {:?} {} {}",
        stored.id,
        stored.tenant,
        stored.name,
        stored.scopes,
        hex_of(&stored.secret_hash),
        String::from_utf8_lossy(&stored.secret_hash)
    );
    assert!(!everything.contains(secret), "{everything}");
    assert!(!everything.contains(&key), "{everything}");
    // What is stored is the documented hash of the secret's bytes, nothing else.
    use base64::Engine as _;
    let bytes: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap()
        .try_into()
        .unwrap();
    assert_ne!(stored.secret_hash, bytes);
    assert_eq!(stored.secret_hash, keys::hash_secret(&id, &bytes));
    assert!(!format!("{stored:?}").contains(&hex_of(&stored.secret_hash)));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn wrong_secrets_and_unknown_keys_fail_alike(store: Arc<dyn Store>) {
    let (id, key) = with_key(store.as_ref()).await;
    let wrong = keys::verify(store.as_ref(), &with_wrong_secret(&key))
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, AuthError::WrongSecret { key_id } if *key_id == id),
        "{wrong}"
    );
    let unknown_key = format!("mly_0000000000000000_{}", &key[key.len() - 43..]);
    let unknown = keys::verify(store.as_ref(), &unknown_key)
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, AuthError::UnknownKey { .. }),
        "{unknown}"
    );
    assert_eq!(wrong.public_message(), unknown.public_message());
    assert_eq!(wrong.public_message(), "invalid API key");
    assert!(!wrong.is_unavailable() && !unknown.is_unavailable());
    let secret = &key[key.len() - 43..];
    for e in [&wrong, &unknown] {
        assert!(!e.to_string().contains(secret), "{e}");
    }
    let stored = store.api_key(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.last_used_at, None,
        "failed attempts are not recorded as use"
    );

    let malformed = keys::verify(store.as_ref(), "mly_nothex_x")
        .await
        .unwrap_err();
    assert!(matches!(malformed, AuthError::Malformed(_)), "{malformed}");
}

async fn revoked_keys_fail_and_only_their_tenant_revokes(store: Arc<dyn Store>) {
    let (id, key) = with_key(store.as_ref()).await;
    assert!(
        !store
            .revoke_api_key(&tenant("beta"), &id, Timestamp::now())
            .await
            .unwrap(),
        "another tenant cannot revoke acme's key"
    );
    keys::verify(store.as_ref(), &key)
        .await
        .expect("still valid after another tenant's attempt");

    let at = Timestamp::now();
    assert!(
        store
            .revoke_api_key(&tenant("acme"), &id, at)
            .await
            .unwrap()
    );
    let revoked = keys::verify(store.as_ref(), &key).await.unwrap_err();
    assert!(
        matches!(&revoked, AuthError::Revoked { key_id, at: when } if *key_id == id && *when == at),
        "{revoked}"
    );
    assert_eq!(revoked.public_message(), "API key revoked");
    // Without the secret nobody learns that the key exists, let alone that it was revoked.
    let guess = keys::verify(store.as_ref(), &with_wrong_secret(&key))
        .await
        .unwrap_err();
    assert!(matches!(guess, AuthError::WrongSecret { .. }), "{guess}");
}

async fn key_use_is_recorded_at_most_once_per_interval(store: Arc<dyn Store>) {
    let (id, key) = with_key(store.as_ref()).await;
    let auth =
        Authenticator::new(store.clone(), None).with_touch_interval(Duration::from_secs(3600));
    let header = format!("Bearer {key}");
    auth.authenticate(Some(&header)).await.unwrap();
    let first = store.api_key(&id).await.unwrap().unwrap().last_used_at;
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    auth.authenticate(Some(&header)).await.unwrap();
    let second = store.api_key(&id).await.unwrap().unwrap().last_used_at;
    assert_eq!(
        first, second,
        "the second use within the interval is not written"
    );

    let every_time = Authenticator::new(store.clone(), None).with_touch_interval(Duration::ZERO);
    every_time.authenticate(Some(&header)).await.unwrap();
    let third = store.api_key(&id).await.unwrap().unwrap().last_used_at;
    assert!(third > first, "{third:?} after {first:?}");
}

async fn missing_and_foreign_credentials_are_told_apart(store: Arc<dyn Store>) {
    let auth = Authenticator::new(store, None);
    let missing = auth.authenticate(None).await.unwrap_err();
    assert!(matches!(missing, AuthError::Missing), "{missing}");
    let jwt_like = auth
        .authenticate(Some("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"))
        .await
        .unwrap_err();
    assert!(
        matches!(jwt_like, AuthError::Malformed(m) if m.contains("no identity provider")),
        "{jwt_like}"
    );
    let other = auth
        .authenticate(Some("Bearer sk_live_123"))
        .await
        .unwrap_err();
    assert!(matches!(other, AuthError::Malformed(_)), "{other}");
    let basic = auth.authenticate(Some("Basic YTpi")).await.unwrap_err();
    assert!(matches!(basic, AuthError::Malformed(_)), "{basic}");
}

/// A store that is down is not the caller's fault.
#[tokio::test]
async fn a_closed_store_is_unavailable_not_unauthenticated() {
    let store = SqliteStore::open_temp().await.unwrap();
    let (_, key) = with_key(&store).await;
    store.close().await;
    let err = keys::verify(&store, &key).await.unwrap_err();
    assert!(matches!(err, AuthError::Store(_)), "{err}");
    assert!(err.is_unavailable());
    assert_eq!(
        err.public_message(),
        "authentication is temporarily unavailable"
    );
}

macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {
        mod sqlite_store {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::sqlite().await).await
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::postgres().await).await
                }
            )*
        }
    };
}

on_both_stores!(
    created_key_authenticates_with_its_tenant_and_scopes,
    only_the_hash_of_the_secret_is_stored,
    wrong_secrets_and_unknown_keys_fail_alike,
    revoked_keys_fail_and_only_their_tenant_revokes,
    key_use_is_recorded_at_most_once_per_interval,
    missing_and_foreign_credentials_are_told_apart,
);

#[test]
fn the_auth_module_reexports_what_the_transports_need() {
    // Compile-time check of the paths the gRPC and REST layers import.
    let _ = auth::bearer_token;
    let _: fn(&str) -> Result<Scope, auth::ScopeError> = str::parse::<Scope>;
}
