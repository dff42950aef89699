"""The users' bearer token check: 401 when no token is sent, 403 when a wrong one is.

Compares in constant time and never echoes the token back. Knows nothing of agents' tokens.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vastfleet.errors import Forbidden, Unauthorized

# auto_error=False: we answer 401/403 ourselves, with our error body; the scheme still shows in OpenAPI
bearer = HTTPBearer(auto_error=False, description="the user token (VASTFLEET_TOKEN)")


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def require_user(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <VASTFLEET_TOKEN>'")
    if not token_matches(credentials.credentials, request.app.state.ctx.token):
        raise Forbidden("wrong bearer token")
