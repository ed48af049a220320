//! The hot-state contract, and what only a shared server adds, run against the Redis at
//! `MAILY_TEST_REDIS` (default `redis://127.0.0.1:6379`). Every adapter gets a prefix of
//! its own, so tests run in parallel and never see each other's keys.

use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::Builder;
use fred::types::config::Config;
use maily_engine::ports::{Claim, HotError, HotState};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use maily_storage::redis_hot::{RedisHotState, RedisParams};
use std::time::Duration;

fn url() -> String {
    std::env::var("MAILY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test uses.
fn unique_prefix() -> String {
    format!("maily-test:{}:", CampaignId::new())
}

async fn connect(prefix: &str) -> RedisHotState {
    RedisHotState::connect(RedisParams {
        key_prefix: prefix.to_string(),
        ..RedisParams::new(url())
    })
    .await
    .expect("redis for tests (set MAILY_TEST_REDIS)")
}

async fn new_hot() -> RedisHotState {
    connect(&unique_prefix()).await
}

maily_engine::hot_state_contract!(new_hot);

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// Two adapters on one prefix behave like two engine processes sharing the server.
#[tokio::test]
async fn processes_sharing_a_prefix_share_the_state() {
    let prefix = unique_prefix();
    let (a, b) = (connect(&prefix).await, connect(&prefix).await);
    let ttl = Duration::from_secs(60);

    assert_eq!(
        a.claim("m", Timestamp(5), ttl).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        b.claim("m", Timestamp(6), ttl).await.unwrap(),
        Claim::InFlight {
            since: Timestamp(5),
            mine: false
        }
    );
    // The claimant itself knows the claim for its own.
    assert_eq!(
        a.claim("m", Timestamp(6), ttl).await.unwrap(),
        Claim::InFlight {
            since: Timestamp(5),
            mine: true
        }
    );
    b.complete("m", "delivered", ttl).await.unwrap();
    assert_eq!(
        a.claim("m", Timestamp(7), ttl).await.unwrap(),
        Claim::Done {
            outcome: "delivered".into()
        }
    );
    // A recorded outcome survives a release from either side.
    a.release("m").await.unwrap();
    assert!(matches!(
        b.claim("m", Timestamp(8), ttl).await.unwrap(),
        Claim::Done { .. }
    ));

    let tenant = TenantId::parse("acme").unwrap();
    a.suppress(&tenant, &addr("ann@example.com")).await.unwrap();
    assert!(
        b.is_suppressed(&tenant, &addr("ann@example.com"))
            .await
            .unwrap()
    );

    let campaign = CampaignId::new();
    let stats = CampaignStats {
        injected: 10,
        delivered: 4,
        ..Default::default()
    };
    b.set_live_stats(&campaign, 0, &stats).await.unwrap();
    assert_eq!(a.live_stats(&campaign).await.unwrap(), Some(stats));

    // One bucket, whichever process takes from it.
    assert_eq!(
        a.take_tokens("mx", 1.0, 3, 3).await.unwrap(),
        Duration::ZERO
    );
    assert!(b.take_tokens("mx", 1.0, 3, 1).await.unwrap() > Duration::ZERO);
}

#[tokio::test]
async fn prefixes_keep_deployments_apart() {
    let (a, b) = (new_hot().await, new_hot().await);
    let ttl = Duration::from_secs(60);
    let tenant = TenantId::parse("acme").unwrap();
    assert_eq!(
        a.claim("m", Timestamp(1), ttl).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        b.claim("m", Timestamp(1), ttl).await.unwrap(),
        Claim::Acquired
    );
    a.suppress(&tenant, &addr("ann@example.com")).await.unwrap();
    assert!(
        !b.is_suppressed(&tenant, &addr("ann@example.com"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_token_bucket_hands_out_no_more_than_its_burst_under_contention() {
    let hot = std::sync::Arc::new(new_hot().await);
    let takers: Vec<_> = (0..40)
        .map(|_| {
            let hot = hot.clone();
            // A refill of one token a minute adds nothing while the test runs.
            tokio::spawn(async move { hot.take_tokens("b", 1.0 / 60.0, 25, 1).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for taker in takers {
        if taker.await.unwrap().is_zero() {
            granted += 1;
        }
    }
    assert_eq!(granted, 25);
}

#[tokio::test]
async fn the_same_inputs_are_refused_as_by_the_memory_adapter() {
    let hot = new_hot().await;
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                hot.take_tokens("b", rate, 5, 1).await,
                Err(HotError::Invalid(_))
            ),
            "{rate}"
        );
    }
    assert!(matches!(
        hot.take_tokens("b", 1.0, 5, 6).await,
        Err(HotError::Invalid(_))
    ));
}

/// Values this adapter did not write are reported as corrupt, naming the key.
#[tokio::test]
async fn foreign_values_are_corrupt() {
    let prefix = unique_prefix();
    let hot = connect(&prefix).await;
    let raw = Builder::from_config(Config::from_url(&url()).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    let idem = format!("{prefix}idem:m");
    let supp = format!("{prefix}supp:acme");
    raw.set::<(), _, _>(&idem, "garbage", None, None, false)
        .await
        .unwrap();
    raw.set::<(), _, _>(&supp, "not a set", None, None, false)
        .await
        .unwrap();

    let claim = hot.claim("m", Timestamp(1), Duration::from_secs(60)).await;
    assert!(
        matches!(&claim, Err(HotError::Corrupt { key, .. }) if key == &idem),
        "{claim:?}"
    );
    let tenant = TenantId::parse("acme").unwrap();
    let lookup = hot.is_suppressed(&tenant, &addr("ann@example.com")).await;
    assert!(
        matches!(&lookup, Err(HotError::Corrupt { key, .. }) if key == &supp),
        "{lookup:?}"
    );

    raw.del::<(), _>(vec![idem, supp]).await.unwrap();
    raw.quit().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = RedisHotState::connect(RedisParams::new(format!("redis://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HotError::Unavailable(m) if m.contains(&format!("127.0.0.1:{port}"))),
        "{err:?}"
    );
}

/// Without pipelining every call takes a connection of its own; the behaviour is the
/// same, and more concurrent callers than connections just wait their turn.
#[tokio::test]
async fn exclusive_connections_serve_more_callers_than_the_pool_holds() {
    let hot = std::sync::Arc::new(
        RedisHotState::connect(RedisParams {
            key_prefix: unique_prefix(),
            pool_size: 2,
            auto_pipeline: false,
            ..RedisParams::new(url())
        })
        .await
        .unwrap(),
    );
    maily_engine::testkit::hot::idempotency_keys_claim_once(&*hot).await;
    let ttl = Duration::from_secs(60);
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let hot = hot.clone();
            tokio::spawn(async move { hot.claim(&format!("k{i}"), Timestamp(i), ttl).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), Claim::Acquired);
    }
}
