//! Contract suite of the hot-state port.

use super::addr;
use crate::ports::{Claim, HotState};
use crate::{CampaignId, CampaignStats, TenantId, Timestamp};
use std::time::Duration;

/// Generates the hot-state contract tests for the adapter returned by `$make().await`.
#[macro_export]
macro_rules! hot_state_contract {
    ($make:ident) => {
        mod hot_state_contract {
            use $crate::testkit::hot as suite;
            #[tokio::test]
            async fn idempotency_keys_claim_once() {
                suite::idempotency_keys_claim_once(&super::$make().await).await
            }
            #[tokio::test]
            async fn claims_expire() {
                suite::claims_expire(&super::$make().await).await
            }
            #[tokio::test]
            async fn suppression_is_per_tenant() {
                suite::suppression_is_per_tenant(&super::$make().await).await
            }
            #[tokio::test]
            async fn token_buckets_limit_and_refill() {
                suite::token_buckets_limit_and_refill(&super::$make().await).await
            }
            #[tokio::test]
            async fn live_stats_round_trip() {
                suite::live_stats_round_trip(&super::$make().await).await
            }
        }
    };
}

/// A key is acquired once; later claims see it in flight, then done with its outcome.
pub async fn idempotency_keys_claim_once(hot: &impl HotState) {
    let ttl = Duration::from_secs(60);
    let now = Timestamp(1_000);
    assert_eq!(hot.claim("m1", now, ttl).await.unwrap(), Claim::Acquired);
    assert_eq!(
        hot.claim("m1", Timestamp(2_000), ttl).await.unwrap(),
        Claim::InFlight {
            since: now,
            mine: true
        }
    );
    hot.complete("m1", "delivered", ttl).await.unwrap();
    assert_eq!(
        hot.claim("m1", Timestamp(3_000), ttl).await.unwrap(),
        Claim::Done {
            outcome: "delivered".into()
        }
    );
    assert_eq!(hot.claim("m2", now, ttl).await.unwrap(), Claim::Acquired);
    hot.release("m2").await.unwrap();
    assert_eq!(hot.claim("m2", now, ttl).await.unwrap(), Claim::Acquired);
}

/// A claim is forgotten after its time to live.
pub async fn claims_expire(hot: &impl HotState) {
    let ttl = Duration::from_millis(100);
    assert_eq!(
        hot.claim("short", Timestamp(1), ttl).await.unwrap(),
        Claim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        hot.claim("short", Timestamp(2), ttl).await.unwrap(),
        Claim::Acquired
    );
}

/// Suppressing an address for one tenant leaves other tenants alone; unsuppressing
/// removes it for that tenant only, and unsuppressing again is harmless.
pub async fn suppression_is_per_tenant(hot: &impl HotState) {
    let a = TenantId::parse("tenant-a").unwrap();
    let b = TenantId::parse("tenant-b").unwrap();
    let ann = addr("ann@example.com");
    assert!(!hot.is_suppressed(&a, &ann).await.unwrap());
    hot.suppress(&a, &ann).await.unwrap();
    hot.suppress(&a, &ann).await.unwrap();
    assert!(hot.is_suppressed(&a, &ann).await.unwrap());
    assert!(!hot.is_suppressed(&b, &ann).await.unwrap());
    hot.suppress(&b, &ann).await.unwrap();
    hot.unsuppress(&a, &ann).await.unwrap();
    assert!(!hot.is_suppressed(&a, &ann).await.unwrap());
    assert!(hot.is_suppressed(&b, &ann).await.unwrap());
    hot.unsuppress(&a, &ann).await.unwrap();
    // One mailbox whatever the case of its local part.
    hot.suppress(&a, &addr("Bob@Example.com")).await.unwrap();
    assert!(
        hot.is_suppressed(&a, &addr("bob@example.com"))
            .await
            .unwrap()
    );
    assert!(
        hot.is_suppressed(&a, &addr("BOB@EXAMPLE.COM"))
            .await
            .unwrap()
    );
    hot.unsuppress(&a, &addr("bOb@example.com")).await.unwrap();
    assert!(
        !hot.is_suppressed(&a, &addr("Bob@Example.com"))
            .await
            .unwrap()
    );
    hot.unsuppress(&a, &addr("nobody@example.com"))
        .await
        .unwrap();
}

/// Each part of a campaign's live counters is replaced as a whole, and a campaign's
/// counters are the sum of its parts.
pub async fn live_stats_round_trip(hot: &impl HotState) {
    let c = CampaignId::new();
    assert_eq!(hot.live_stats(&c).await.unwrap(), None);
    let s = CampaignStats {
        delivered: 7,
        bounced_hard: 1,
        ..Default::default()
    };
    hot.set_live_stats(&c, 3, &s).await.unwrap();
    assert_eq!(hot.live_stats(&c).await.unwrap(), Some(s));
    let s2 = CampaignStats {
        delivered: 9,
        ..Default::default()
    };
    hot.set_live_stats(&c, 3, &s2).await.unwrap();
    assert_eq!(hot.live_stats(&c).await.unwrap(), Some(s2));
    let other = CampaignStats {
        delivered: 5,
        opened: 2,
        ..Default::default()
    };
    hot.set_live_stats(&c, 11, &other).await.unwrap();
    let sum = CampaignStats {
        delivered: 14,
        opened: 2,
        ..Default::default()
    };
    assert_eq!(hot.live_stats(&c).await.unwrap(), Some(sum));
    // Another campaign's parts are its own.
    assert_eq!(hot.live_stats(&CampaignId::new()).await.unwrap(), None);
}

/// A bucket gives out its burst, then makes callers wait, then refills.
pub async fn token_buckets_limit_and_refill(hot: &impl HotState) {
    // 10 tokens a second, burst 5.
    for _ in 0..5 {
        assert_eq!(
            hot.take_tokens("b1", 10.0, 5, 1).await.unwrap(),
            Duration::ZERO
        );
    }
    let wait = hot.take_tokens("b1", 10.0, 5, 1).await.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    // A refused take takes nothing: after the wait, one token is there.
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(
        hot.take_tokens("b1", 10.0, 5, 1).await.unwrap(),
        Duration::ZERO
    );
    // Buckets are independent.
    assert_eq!(
        hot.take_tokens("b2", 10.0, 5, 5).await.unwrap(),
        Duration::ZERO
    );
    // More than the burst can never be granted.
    assert!(hot.take_tokens("b3", 10.0, 5, 6).await.is_err());
}
