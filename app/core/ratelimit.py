"""Per-tenant request rate limit: a token bucket in Redis, so every API replica shares one budget.

The bucket refills at `rate` tokens a second up to `burst`; each request takes one. The check is one Lua
script (atomic, one round trip) that reads the Redis server's clock, so replicas with skewed clocks agree.
When Redis cannot answer, requests are let through: the limiter protects the service, it must not be the
thing that takes it down.
"""

from __future__ import annotations

import logging
import math

import redis

log = logging.getLogger("ftguard.api")

BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


class RateLimiter:
    def __init__(self, connection: redis.Redis, *, prefix: str, rate: float, burst: int) -> None:
        self.connection, self.prefix, self.rate, self.burst = connection, prefix, rate, burst
        self._script = connection.register_script(BUCKET_LUA) if rate > 0 else None

    def check(self, tenant_id: str) -> int | None:
        """None when the request may go ahead, else the seconds to wait (for Retry-After)."""
        if self._script is None:
            return None
        try:
            wait = float(
                self._script(keys=[f"{self.prefix}:ratelimit:{tenant_id}"], args=[self.rate, self.burst])
            )
        except redis.RedisError:
            log.warning("rate limiter unavailable; letting the request through", exc_info=True)
            return None
        return None if wait <= 0 else max(1, math.ceil(wait))
