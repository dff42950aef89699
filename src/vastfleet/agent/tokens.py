"""Per-attempt agent tokens: the agent's only credential, bound to (job, epoch, instance, expiry).

Format: `vfa1.<payload>.<mac>` where payload is the base64url of a compact JSON object
`{"j": job id, "e": epoch, "i": instance label or id, "x": expiry (unix seconds)}` and mac is the
base64url HMAC-SHA256 of `vfa1.<payload>` under the control plane's secret. `verify` checks the MAC in
constant time before it reads the payload, then the expiry, and returns the claims.

The instance is the label the scheduler gives the instance at create time (its id is not known before
the create call answers); when it is a number it is checked against the job's `instance_id` at claim.
The onstart token travels in the instance's create-time env, which vast.ai stores and shows in every instance
listing, so the API accepts it for ONE claim only. The claim answers a session secret
`vfs1.<epoch>.<mac>`: the HMAC of (job, epoch, the agent's claim nonce, a random salt kept in Redis), so a
retried claim with the same nonce gets the same secret again while Redis holds only the salt and hashes;
every later call needs it (`vastfleet.api.agent_sessions`).

Runs on the control plane, standard library only all the same (the whole `vastfleet.agent` package
is), so it raises its own `InvalidToken`; the API answers it with 401. Never logs or returns a token in
an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

PREFIX = "vfa1"
SESSION_PREFIX = "vfs1"
DEFAULT_TTL_S = 30 * 24 * 3600.0  # an attempt may run for weeks; the epoch fence ends it sooner


class InvalidToken(Exception):
    """A token that is malformed, forged or expired; the message never contains the token."""


@dataclass(frozen=True)
class AgentClaims:
    job_id: str
    epoch: int
    instance: str
    expires_at: float
    kind: str = "onstart"  # or "session": what authenticated the call


class TokenSigner:
    def __init__(
        self, secret: bytes | str, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ValueError("the agent token secret must be at least 16 bytes")
        self._key = key
        self.ttl_s = float(ttl_s)
        self.clock = clock

    def issue(self, job_id: str, epoch: int, instance: str | int, ttl_s: float | None = None) -> str:
        if not job_id or int(epoch) < 0 or str(instance) == "":
            raise ValueError("an agent token needs a job id, an epoch >= 0 and an instance")
        expires = int(self.clock() + (self.ttl_s if ttl_s is None else ttl_s))
        body = json.dumps(
            {"j": job_id, "e": int(epoch), "i": str(instance), "x": expires},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        payload = f"{PREFIX}.{_b64e(body)}"
        return f"{payload}.{_b64e(self._mac(payload))}"

    def verify(self, token: str) -> AgentClaims:
        """The claims of a genuine, unexpired token; InvalidToken otherwise (never echoing the token)."""
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != PREFIX:
            raise InvalidToken("malformed agent token")
        payload = f"{parts[0]}.{parts[1]}"
        try:
            mac = _b64d(parts[2])
        except (binascii.Error, ValueError):
            raise InvalidToken("malformed agent token") from None
        if not hmac.compare_digest(self._mac(payload), mac):
            raise InvalidToken("invalid agent token")
        try:
            data = json.loads(_b64d(parts[1]))
            claims = AgentClaims(
                job_id=str(data["j"]),
                epoch=int(data["e"]),
                instance=str(data["i"]),
                expires_at=float(data["x"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidToken("malformed agent token") from None
        if claims.expires_at < self.clock():
            raise InvalidToken("the agent token has expired")
        return claims

    def session_secret(self, job_id: str, epoch: int, nonce: str, salt: str) -> str:
        """The attempt's session secret: only the holder of this signer's key can compute it from what Redis
        keeps (the salt); the same nonce and salt give the same secret (a lost claim answer, asked again)."""
        mac = self._mac("\n".join(("session", job_id, str(int(epoch)), nonce, salt)))
        return f"{SESSION_PREFIX}.{int(epoch)}.{_b64e(mac)}"

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).digest()


def session_epoch(secret: str) -> int:
    """The epoch a session secret names (not a secret itself); InvalidToken when it is not one."""
    parts = secret.split(".") if isinstance(secret, str) else []
    if len(parts) != 3 or parts[0] != SESSION_PREFIX or not parts[1].isdigit() or len(parts[1]) > 18:
        raise InvalidToken("malformed agent session")
    if len(parts[2]) != 43:  # 32 bytes of HMAC-SHA256, base64url without padding
        raise InvalidToken("malformed agent session")
    return int(parts[1])


def secret_hash(secret: str) -> str:
    """What the control plane stores instead of a secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
