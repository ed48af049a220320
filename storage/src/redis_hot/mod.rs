//! The Redis adapter of the hot-state port: state shared by every engine process.
//!
//! Keys, all under the configured prefix `P`:
//!
//! - `P idem:{key}`, a string: `c:{since}:{nonce}` while claimed, `d:{outcome}` once
//!   done; it expires after the time to live of the last claim or completion.
//! - `P supp:{tenant}`, a set of suppressed addresses.
//! - `P live:{campaign}`, a hash of the twelve [`CampaignStats::FIELDS`].
//! - `P bucket:{name}`, a hash (`tokens`, `at`) that expires once the bucket would be
//!   full again, since a missing bucket reads as full.
//!
//! Every update is one atomic command: a claim is `SET NX GET PX` (which needs Redis 7.0,
//! checked on connect), live counters are replaced by one `HSET` of all twelve fields,
//! and `release` and `take_tokens` are Lua scripts, run by digest and re-sent whole when
//! the server has lost its script cache. Each command touches one key, so the layout
//! also suits a cluster.
//!
//! fred multiplexes the commands of all tasks over each pooled connection (auto
//! pipelining). With `auto_pipeline` off, a command holds a connection of its own until
//! its reply instead, as a classic connection pool does. Every call is bounded by the
//! command timeout and fails with [`HotError::Unavailable`] naming the server; lost
//! connections are re-established in the background with exponential backoff, so the
//! adapter survives a Redis restart without being rebuilt.

mod codec;
mod scripts;

use async_trait::async_trait;
use codec::Keys;
use fred::clients::{Client, ExclusivePool, Pool};
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface, HashesInterface, KeysInterface, SetsInterface};
use fred::types::config::{Config, ReconnectPolicy, UnresponsiveConfig};
use fred::types::{Builder, Expiration, SetOptions};
use maily_engine::ports::{Claim, HotError, HotState};
use maily_engine::{CampaignId, CampaignStats, EmailAddress, TenantId, Timestamp};
use scripts::Script;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

/// The first reconnection delay; each failed attempt doubles it up to the configured
/// maximum.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);

/// How to connect to Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisParams {
    /// A `redis://[user:password@]host:port[/db]` URL (`rediss://` is not supported).
    pub url: String,
    /// Prepended to every key, so several engines or environments share a server.
    pub key_prefix: String,
    /// Connections to open.
    pub pool_size: usize,
    /// Whether concurrent calls share connections (pipelined) or take turns on them.
    pub auto_pipeline: bool,
    /// The longest a call waits for its reply, reconnection included (without
    /// pipelining, waiting for a free connection may take as long again).
    pub command_timeout: Duration,
    /// The longest pause between two reconnection attempts.
    pub reconnect_max_delay: Duration,
}

impl RedisParams {
    /// Parameters for the server at `url` with the production defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisParams {
            url: url.into(),
            key_prefix: "maily:".into(),
            pool_size: 4,
            auto_pipeline: true,
            command_timeout: Duration::from_secs(2),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for RedisParams {
    /// Leaves the password out of the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisParams")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("auto_pipeline", &self.auto_pipeline)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

/// A [`HotState`] kept in Redis, shared by every process using the same prefix.
pub struct RedisHotState {
    clients: Clients,
    keys: Keys,
    /// `host:port` of the server, for error messages and logs.
    server: String,
    command_timeout: Duration,
    release: Script,
    take_tokens: Script,
    /// Random per instance; with `claims` it makes every claim value unique.
    instance: u64,
    claims: AtomicU64,
}

/// The pooled connections, shared or taken in turn.
enum Clients {
    Pipelined(Pool),
    Exclusive(ExclusivePool),
}

/// A connection borrowed for one command.
enum Lease<'a> {
    Shared(&'a Client),
    Exclusive(OwnedMutexGuard<Client>),
}

impl Deref for Lease<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        match self {
            Lease::Shared(client) => client,
            Lease::Exclusive(guard) => guard,
        }
    }
}

impl fmt::Debug for RedisHotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHotState")
            .field("server", &self.server)
            .field("keys", &self.keys)
            .field("pipelined", &matches!(self.clients, Clients::Pipelined(_)))
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisHotState {
    /// Connects the pool and loads the scripts; fails when the server cannot be reached
    /// within the command timeout or is older than Redis 7.0.
    pub async fn connect(params: RedisParams) -> Result<Self, HotError> {
        if params.pool_size == 0 {
            return Err(HotError::Invalid("redis pool_size must be positive".into()));
        }
        if params.command_timeout.is_zero() {
            // fred reads zero as "no timeout", which would let calls hang on an outage.
            return Err(HotError::Invalid(
                "redis command_timeout must be positive".into(),
            ));
        }
        if params.url.starts_with("rediss:") || params.url.starts_with("valkeys:") {
            // fred is built without TLS and would silently talk plain text instead.
            return Err(HotError::Invalid(format!(
                "redis url {}: TLS is not supported",
                redact_url(&params.url)
            )));
        }
        let config = Config::from_url(&params.url).map_err(|e| {
            HotError::Invalid(format!("redis url {}: {e}", redact_url(&params.url)))
        })?;
        let server = config
            .server
            .hosts()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let builder = builder(config, &params);
        let clients = if params.auto_pipeline {
            Clients::Pipelined(builder.build_pool(params.pool_size).map_err(invalid)?)
        } else {
            Clients::Exclusive(
                builder
                    .build_exclusive_pool(params.pool_size)
                    .map_err(invalid)?,
            )
        };
        let unavailable = |e: RedisError| HotError::Unavailable(format!("redis at {server}: {e}"));
        let connected = match &clients {
            Clients::Pipelined(pool) => pool.init().await.map(drop),
            Clients::Exclusive(pool) => pool.init().await.map(drop),
        };
        connected.map_err(unavailable)?;

        let all = clients.all().await;
        for client in &all {
            log_connection_events(client, &server);
        }
        let setup = async {
            if let Some(version) = all[0].server_version().filter(|v| v.major < 7) {
                return Err(HotError::Unavailable(format!(
                    "redis at {server} runs {version}; claims need SET NX GET, from Redis 7.0"
                )));
            }
            let release = Script::load(&all[0], "release", scripts::RELEASE);
            let take_tokens = Script::load(&all[0], "take_tokens", scripts::TAKE_TOKENS);
            Ok((
                release.await.map_err(unavailable)?,
                take_tokens.await.map_err(unavailable)?,
            ))
        };
        let (release, take_tokens) = match setup.await {
            Ok(scripts) => scripts,
            Err(e) => {
                clients.quit().await;
                return Err(e);
            }
        };
        info!(
            server = %server,
            prefix = %params.key_prefix,
            pool_size = params.pool_size,
            pipelined = params.auto_pipeline,
            "connected to redis"
        );
        Ok(RedisHotState {
            clients,
            keys: Keys::new(&params.key_prefix),
            server,
            command_timeout: params.command_timeout,
            release,
            take_tokens,
            instance: RandomState::new().hash_one(std::process::id()),
            claims: AtomicU64::new(0),
        })
    }

    /// Closes the connections; later calls fail with [`HotError::Unavailable`].
    pub async fn close(&self) {
        self.clients.quit().await;
    }

    /// A connection for one command; in exclusive mode, waits for a free one up to the
    /// command timeout.
    async fn client(&self) -> Result<Lease<'_>, HotError> {
        match &self.clients {
            Clients::Pipelined(pool) => Ok(Lease::Shared(pool.next_connected())),
            Clients::Exclusive(pool) => tokio::time::timeout(self.command_timeout, pool.acquire())
                .await
                .map(Lease::Exclusive)
                .map_err(|_| {
                    self.unavailable(format!(
                        "no free connection within {:?}",
                        self.command_timeout
                    ))
                }),
        }
    }

    /// A value no other claim attempt writes.
    fn nonce(&self) -> String {
        let n = self.claims.fetch_add(1, Ordering::Relaxed);
        format!("{:x}.{n:x}", self.instance)
    }

    fn unavailable(&self, why: impl fmt::Display) -> HotError {
        HotError::Unavailable(format!("redis at {}: {why}", self.server))
    }

    /// Maps a failed command on `key` to what a caller can act on.
    fn fail(&self, key: &str, e: RedisError) -> HotError {
        if e.details().starts_with("WRONGTYPE") || matches!(e.kind(), ErrorKind::Parse) {
            return HotError::Corrupt {
                key: key.to_string(),
                reason: e.details().to_string(),
            };
        }
        match e.kind() {
            ErrorKind::Timeout => {
                self.unavailable(format!("no reply within {:?}", self.command_timeout))
            }
            ErrorKind::InvalidArgument | ErrorKind::InvalidCommand => HotError::Invalid(format!(
                "redis at {} refused a command on {key:?}: {e}",
                self.server
            )),
            _ => self.unavailable(e),
        }
    }
}

impl Clients {
    /// Every connection, waiting for exclusive ones to be free; for setup.
    async fn all(&self) -> Vec<Client> {
        match self {
            Clients::Pipelined(pool) => pool.clients().to_vec(),
            Clients::Exclusive(pool) => {
                let mut all = Vec::with_capacity(pool.size());
                for client in pool.clients() {
                    all.push(client.lock().await.clone());
                }
                all
            }
        }
    }

    async fn quit(&self) {
        for client in self.all().await {
            // Quitting only fails when the connection is already gone.
            let _ = client.quit().await;
        }
    }
}

/// The fred client configuration: every command bounded by the timeout, reconnection
/// forever with exponential backoff.
fn builder(config: Config, params: &RedisParams) -> Builder {
    let timeout = params.command_timeout;
    let max_delay = params.reconnect_max_delay.max(RECONNECT_MIN_DELAY);
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|perf| perf.default_command_timeout = timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = timeout;
            conn.internal_command_timeout = timeout;
            // A server that stops answering without closing the socket (paused,
            // partitioned) gets its connection dropped and redialled.
            conn.unresponsive = UnresponsiveConfig {
                max_timeout: Some(timeout * 2),
                interval: (timeout / 2).max(Duration::from_millis(10)),
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            millis_u32(RECONNECT_MIN_DELAY),
            millis_u32(max_delay),
            2,
        ));
    builder
}

fn millis_u32(d: Duration) -> u32 {
    d.as_millis().try_into().unwrap_or(u32::MAX)
}

fn invalid(e: RedisError) -> HotError {
    HotError::Invalid(format!("redis client: {e}"))
}

/// Logs lost and regained connections; fred ends these tasks when the client quits.
fn log_connection_events(client: &Client, server: &str) {
    let label = server.to_string();
    client.on_error(move |(error, at)| {
        let at = at.map_or_else(|| label.clone(), |s| s.to_string());
        async move {
            warn!(server = %at, error = %error, "redis connection failed");
            Ok(())
        }
    });
    client.on_reconnect(|at| async move {
        info!(server = %at, "redis connection restored");
        Ok(())
    });
}

/// The URL with any credentials replaced by `***`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl HotState for RedisHotState {
    async fn claim(&self, key: &str, now: Timestamp, ttl: Duration) -> Result<Claim, HotError> {
        let key = self.keys.idempotency(key);
        let value = codec::claimed(now, &self.nonce());
        let expire = Expiration::PX(codec::ttl_millis(ttl));
        let previous: Option<String> = self
            .client()
            .await?
            .set(
                &key,
                value.as_str(),
                Some(expire),
                Some(SetOptions::NX),
                true,
            )
            .await
            .map_err(|e| self.fail(&key, e))?;
        match previous {
            None => Ok(Claim::Acquired),
            // Our own value: the client re-sent the SET after losing its first reply.
            Some(previous) if previous == value => Ok(Claim::Acquired),
            Some(previous) => codec::decode_claim(&key, &previous, &format!("{:x}", self.instance)),
        }
    }

    async fn complete(&self, key: &str, outcome: &str, ttl: Duration) -> Result<(), HotError> {
        let key = self.keys.idempotency(key);
        let expire = Expiration::PX(codec::ttl_millis(ttl));
        self.client()
            .await?
            .set::<(), _, _>(&key, codec::done(outcome), Some(expire), None, false)
            .await
            .map_err(|e| self.fail(&key, e))
    }

    async fn release(&self, key: &str) -> Result<(), HotError> {
        let key = self.keys.idempotency(key);
        self.release
            .run::<i64>(&*self.client().await?, &key, Vec::new())
            .await
            .map(drop)
            .map_err(|e| self.fail(&key, e))
    }

    async fn suppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError> {
        let key = self.keys.suppression(tenant);
        self.client()
            .await?
            .sadd::<i64, _, _>(&key, email.mailbox_key().as_str())
            .await
            .map(drop)
            .map_err(|e| self.fail(&key, e))
    }

    async fn unsuppress(&self, tenant: &TenantId, email: &EmailAddress) -> Result<(), HotError> {
        let key = self.keys.suppression(tenant);
        self.client()
            .await?
            // Members added before suppression ignored case may be in any case.
            .srem::<i64, _, _>(
                &key,
                vec![email.mailbox_key().to_string(), email.to_string()],
            )
            .await
            .map(drop)
            .map_err(|e| self.fail(&key, e))
    }

    async fn is_suppressed(
        &self,
        tenant: &TenantId,
        email: &EmailAddress,
    ) -> Result<bool, HotError> {
        let key = self.keys.suppression(tenant);
        self.client()
            .await?
            // Members added before suppression ignored case may be in any case.
            .smismember::<Vec<bool>, _, _>(
                &key,
                vec![email.mailbox_key().to_string(), email.to_string()],
            )
            .await
            .map(|found| found.contains(&true))
            .map_err(|e| self.fail(&key, e))
    }

    async fn set_live_stats(
        &self,
        campaign: &CampaignId,
        part: u32,
        stats: &CampaignStats,
    ) -> Result<(), HotError> {
        let key = self.keys.live_stats(campaign);
        // A part is twelve fields of the campaign's hash, all written in one command,
        // so each part is replaced atomically.
        self.client()
            .await?
            .hset::<i64, _, _>(&key, codec::part_fields(part, stats))
            .await
            .map(drop)
            .map_err(|e| self.fail(&key, e))
    }

    async fn live_stats(&self, campaign: &CampaignId) -> Result<Option<CampaignStats>, HotError> {
        let key = self.keys.live_stats(campaign);
        let fields: HashMap<String, String> = self
            .client()
            .await?
            .hgetall(&key)
            .await
            .map_err(|e| self.fail(&key, e))?;
        codec::decode_parts(&key, fields)
    }

    async fn take_tokens(
        &self,
        bucket: &str,
        rate: f64,
        burst: u64,
        n: u64,
    ) -> Result<Duration, HotError> {
        if n > burst {
            return Err(HotError::Invalid(format!(
                "{n} tokens asked of bucket {bucket:?} whose burst is {burst}"
            )));
        }
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(HotError::Invalid(format!(
                "refill rate {rate} of bucket {bucket:?} is not positive"
            )));
        }
        let key = self.keys.bucket(bucket);
        let args = vec![rate.to_string(), burst.to_string(), n.to_string()];
        let wait_us: u64 = self
            .take_tokens
            .run(&*self.client().await?, &key, args)
            .await
            .map_err(|e| self.fail(&key, e))?;
        Ok(Duration::from_micros(wait_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://user:s3cret@cache:6379/2"),
            "redis://***@cache:6379/2"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        let debug = format!("{:?}", RedisParams::new("redis://:pw@cache"));
        assert!(!debug.contains("pw"), "{debug}");
    }

    #[tokio::test]
    async fn parameters_that_would_hang_or_cannot_work_are_refused() {
        let zero_pool = RedisParams {
            pool_size: 0,
            ..RedisParams::new("redis://127.0.0.1:1")
        };
        let no_timeout = RedisParams {
            command_timeout: Duration::ZERO,
            ..RedisParams::new("redis://127.0.0.1:1")
        };
        let bad_url = RedisParams::new("not a url");
        let tls = RedisParams::new("rediss://127.0.0.1:1");
        for params in [zero_pool, no_timeout, bad_url, tls] {
            assert!(matches!(
                RedisHotState::connect(params).await,
                Err(HotError::Invalid(_))
            ));
        }
    }
}
