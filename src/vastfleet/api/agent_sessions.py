"""Agent sessions in Redis: the one claim an onstart token allows, and the per-attempt secret it hands out.

Key `{p}:agent:session:{job}:{epoch}`, a hash: `nonce` (sha256 of the agent's claim nonce), `salt`, `session`
(sha256 of the session secret), `instance` (the container id the claiming agent reported) and `refused`
(second claims refused so far). The secret itself is never stored: `TokenSigner.session_secret` derives it
from (job, epoch, nonce, salt) with the control plane's key, so a claim retried with the same nonce (its
answer was lost) gets the same secret, and a reader of Redis learns nothing that opens the job.

`open` is the claim with the onstart token: the first one creates the record atomically, the same nonce
again answers the same secret, any other nonce raises `SecondClaim`. `verify` authenticates every later
call. Records expire with the onstart token's lifetime, renewed by every call of the session.
Never changes a job; never logs a secret.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import redis

from vastfleet.agent.tokens import (
    DEFAULT_TTL_S,
    AgentClaims,
    InvalidToken,
    TokenSigner,
    secret_hash,
    session_epoch,
)

OPEN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'nonce', ARGV[2], 'salt', ARGV[3], 'session', ARGV[4], 'instance', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {}
"""


class SecondClaim(Exception):
    """The attempt was already claimed with its onstart token under another nonce; `count` such refusals."""

    def __init__(self, count: int) -> None:
        super().__init__(f"second claim with the onstart token refused ({count})")
        self.count = count


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AgentSessions:
    def __init__(self, client: redis.Redis, signer: TokenSigner, prefix: str = "vf",
                 ttl_s: float = DEFAULT_TTL_S) -> None:
        self.redis, self.signer, self.prefix, self.ttl_s = client, signer, prefix, int(ttl_s)
        self._open = client.register_script(OPEN_LUA)

    def key(self, job_id: str, epoch: int) -> str:
        return f"{self.prefix}:agent:session:{job_id}:{int(epoch)}"

    def open(self, job_id: str, epoch: int, nonce: str, instance: str) -> str:
        """The session secret for a claim with the onstart token (the first, or the same nonce again);
        SecondClaim for any other nonce."""
        salt = secrets.token_hex(32)
        secret = self.signer.session_secret(job_id, epoch, nonce, salt)
        key = self.key(job_id, epoch)
        reply = self._open(keys=[key], args=[self.ttl_s, secret_hash(nonce), salt, secret_hash(secret), instance])
        if not reply:
            return secret
        record = {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)}
        if not hmac.compare_digest(record.get("nonce", ""), secret_hash(nonce)):
            raise SecondClaim(int(self.redis.hincrby(key, "refused", 1)))
        return self.signer.session_secret(job_id, epoch, nonce, record.get("salt", ""))

    def verify(self, job_id: str, secret: str) -> AgentClaims:
        """The attempt a session secret belongs to; InvalidToken when it is not one we handed out."""
        epoch = session_epoch(secret)
        key = self.key(job_id, epoch)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, ["session", "instance"])
        pipe.expire(key, self.ttl_s)
        (stored, instance), _ = pipe.execute()
        if stored is None or not hmac.compare_digest(_text(stored), secret_hash(secret)):
            raise InvalidToken("unknown agent session (not handed out for this job and attempt)")
        return AgentClaims(job_id=job_id, epoch=epoch, instance=_text(instance or ""), expires_at=float("inf"),
                           kind="session")
