"""A named lease with a fencing token: who may act as the one scheduler leader (or any single owner).

`acquire` returns a token from a counter that only grows, so a writer holding an old token can always be
told apart from the current holder, even after the lease expired and was taken by someone else. Expiry
is judged by the caller's clock (an argument, so tests drive time), not by Redis key TTLs; the record
stays in Redis until replaced. Every step is one Lua script, atomic.

Never decides who should lead; never sleeps or renews on its own (the owner's loop calls `renew`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from vastfleet.queue.keys import Keys

# A live lease held by another owner blocks; the same owner re-acquiring keeps its token and extends.
ACQUIRE_LUA = """
local lease, counter, owner, now, ttl = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', lease, 'owner', 'token', 'expires_at')
if cur[1] and tonumber(cur[3]) > now then
  if cur[1] ~= owner then return false end
  redis.call('HSET', lease, 'expires_at', tostring(now + ttl))
  return tonumber(cur[2])
end
local token = redis.call('INCR', counter)
redis.call('HSET', lease, 'owner', owner, 'token', token, 'expires_at', tostring(now + ttl))
return token
"""

# Only the live holder with its own token renews; an expired lease is lost even if nobody took it yet,
# because the owner cannot know whether another writer acted in between.
RENEW_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token', 'expires_at')
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] or tonumber(cur[3]) <= now then return 0 end
redis.call('HSET', KEYS[1], 'expires_at', tostring(now + ttl))
return 1
"""

RELEASE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Lease:
    def __init__(self, redis: redis.Redis, name: str, ttl_s: float, clock: Callable[[], float] = time.time,
                 prefix: str = "vf") -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive ttl")
        self.redis = redis
        self.name = name
        self.ttl_s = ttl_s
        self.clock = clock
        keys = Keys(prefix)
        self._key, self._counter = keys.lease(name), keys.lease_token(name)
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    def acquire(self, owner: str) -> int | None:
        """The fencing token if `owner` now holds the lease, else None."""
        token = self._acquire(keys=[self._key, self._counter], args=[owner, repr(self.clock()), repr(self.ttl_s)])
        return None if token is None else int(token)

    def renew(self, owner: str, token: int) -> bool:
        args = [owner, str(token), repr(self.clock()), repr(self.ttl_s)]
        return bool(self._renew(keys=[self._key], args=args))

    def release(self, owner: str, token: int) -> None:
        """Gives the lease up if `owner` still holds it with `token`; otherwise does nothing."""
        self._release(keys=[self._key], args=[owner, str(token)])

    def holder(self) -> tuple[str, int] | None:
        owner, token, expires_at = self.redis.hmget(self._key, ["owner", "token", "expires_at"])
        if owner is None or float(_text(expires_at)) <= self.clock():
            return None
        return _text(owner), int(_text(token))

    def is_current(self, token: int) -> bool:
        """Whether `token` is the live holder's: the check a fenced writer makes before acting."""
        held = self.holder()
        return held is not None and held[1] == token
