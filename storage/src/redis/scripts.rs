//! The Lua scripts [`super::RedisState`] runs: each one is atomic on the server. They compare
//! and copy bytes and keep a token bucket; every business rule stays in Rust.

use redis::Script;
use std::sync::LazyLock;

/// A batch of claim compare-and-sets, fenced by a partition lease.
///
/// KEYS[1]: the lease key (unfenced: any key, unread); KEYS[1 + i]: the claims hash of write i.
/// ARGV[1]: the fence token ('' when unfenced); ARGV[2]: the claims' time to live in ms; then
/// per write i: field, expected claim ('' for none), new claim at ARGV[3i], [3i+1], [3i+2].
/// Returns `{-1}` when fenced (nothing written), else one 1/0 per write.
pub static PUT_CLAIMS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' then
  local lease = redis.call('GET', KEYS[1])
  if not lease or string.match(lease, '^(%d+):') ~= ARGV[1] then return {-1} end
end
local out = {}
for i = 1, #KEYS - 1 do
  local key, field, expected, new = KEYS[i + 1], ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local stored = redis.call('HGET', key, field)
  if (stored == false and expected == '') or stored == expected then
    redis.call('HSET', key, field, new)
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
",
    )
});

/// Compare-and-set of one value: writes ARGV[2] ('' deletes) with a time to live of ARGV[3] ms
/// (0: none) if KEYS[1] holds ARGV[1] ('' for absent). Returns 1 if written.
pub static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('GET', KEYS[1])
if not ((stored == false and ARGV[1] == '') or stored == ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
",
    )
});

/// A token bucket on the server's clock. KEYS[1]: the bucket. ARGV: rate per second, burst,
/// n, mode (`take`: take up to n whole tokens; `refund`: give n back, never above the burst,
/// and only to a bucket that exists). A new bucket starts empty. Returns `{granted, wait_us}`
/// (the wait until the next token when fewer than n were granted).
pub static TOKENS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = math.max(tonumber(ARGV[1]), 0.1)
local burst = math.max(tonumber(ARGV[2]), 1)
local n = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(s[1]), tonumber(s[2])
if tokens == nil then
  if ARGV[4] == 'refund' then return {0, 0} end
  tokens, ts = 0, now
end
tokens = math.min(tokens + math.max(now - ts, 0) * rate, burst)
local granted, wait_us = 0, 0
if ARGV[4] == 'refund' then
  tokens = math.min(tokens + n, burst)
else
  granted = math.min(math.floor(math.max(tokens, 0)), n)
  tokens = tokens - granted
  if granted < n then wait_us = math.ceil(math.max(1 - tokens, 0) / rate * 1000000) end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], 3600000)
return {granted, wait_us}
",
    )
});
