//! The Lua scripts of the Redis adapter, for the updates one command cannot make
//! atomically.
//!
//! Each script touches only the one key it is given, so it also runs on a cluster.

use fred::clients::Client;
use fred::error::Error;
use fred::interfaces::LuaInterface;
use fred::types::FromValue;
use tracing::debug;

/// Deletes `KEYS[1]` only while it holds a claim: a recorded outcome must keep repeats
/// from redoing the work. Returns how many keys were deleted.
pub(super) const RELEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == 'c:' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// A token bucket in the hash `KEYS[1]` (`tokens`, and `at`: server time in
/// microseconds), refilled at `ARGV[1]` tokens a second up to `ARGV[2]`; takes
/// `ARGV[3]` tokens. Returns 0 when they were taken, otherwise takes nothing and returns
/// the microseconds until they will be there.
///
/// Time comes from the server's clock so that every engine process shares one notion of
/// it; a missing or unreadable bucket is a full one.
pub(super) const TAKE_TOKENS: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1])
local at = tonumber(held[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
-- A server clock that stepped back refills nothing rather than emptying the bucket.
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000000)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = math.min(math.ceil((n - tokens) * 1000000 / rate), 1e15)
end
-- Lua prints numbers with 14 digits, too few for a time in microseconds.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.0f', now))
-- Once full again the bucket is the same as a missing one, so it may go.
local full_in_ms = math.min(math.ceil((burst - tokens) * 1000 / rate), 3153600000000)
redis.call('PEXPIRE', KEYS[1], full_in_ms + 1000)
return wait
"#;

/// A script the server knows by its SHA-1 digest.
#[derive(Debug, Clone)]
pub(super) struct Script {
    name: &'static str,
    lua: &'static str,
    sha: String,
}

impl Script {
    /// Loads `lua` into the server's script cache; this also checks that it compiles.
    pub(super) async fn load(
        client: &Client,
        name: &'static str,
        lua: &'static str,
    ) -> Result<Self, Error> {
        let sha: String = client.script_load(lua).await?;
        Ok(Script { name, lua, sha })
    }

    /// Runs the script on `key` by its digest, sending the whole script when the server
    /// has forgotten it (a restart or `SCRIPT FLUSH` empties the cache).
    pub(super) async fn run<R: FromValue>(
        &self,
        client: &Client,
        key: &str,
        args: Vec<String>,
    ) -> Result<R, Error> {
        match client.evalsha(self.sha.as_str(), key, args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                debug!(
                    script = self.name,
                    "redis lost the script, sending it again"
                );
                // EVAL also puts the script back in the cache for the next EVALSHA.
                client.eval(self.lua, key, args).await
            }
            other => other,
        }
    }
}
