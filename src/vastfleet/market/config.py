"""Building the marketplace from the environment: which key, which server.

Owns: finding the API key where the `vastai` package looks for it (`VAST_API_KEY`, then
`$XDG_CONFIG_HOME/vastai/vast_api_key` or `~/.config/vastai/vast_api_key`, then the legacy
`~/.vast_api_key`) and the server (`VASTFLEET_MARKET_URL`, default https://console.vast.ai).
Never prints or logs the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vastfleet.errors import BadInput, MarketAuthError
from vastfleet.market.vast import DEFAULT_SERVER, VastMarketplace

KEY_ENV = "VAST_API_KEY"
URL_ENV = "VASTFLEET_MARKET_URL"


def key_files(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """The key files the vastai package reads, in its order (see `vastai._base._resolve_api_key`)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [config_home / "vastai" / "vast_api_key", home / ".vast_api_key"]


def find_api_key(env: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """The vast.ai API key; MarketAuthError saying where we looked when there is none."""
    env = os.environ if env is None else env
    key = (env.get(KEY_ENV) or "").strip()
    if key:
        return key
    files = key_files(env, home)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        except OSError as exc:
            raise MarketAuthError(f"cannot read the vast.ai key file {path}: {exc.strerror}") from None
        if text:
            return text
    raise MarketAuthError(
        f"no vast.ai API key: set {KEY_ENV}, or run `vastai set api-key YOUR_KEY` (it writes {files[0]})"
    )


def market_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = (env.get(URL_ENV) or DEFAULT_SERVER).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"{URL_ENV} must be an http(s) URL like {DEFAULT_SERVER}, not {url!r}")
    return url


def marketplace_from_env(
    env: Mapping[str, str] | None = None, home: Path | None = None, **kwargs: Any
) -> VastMarketplace:
    """A `VastMarketplace` for the key and server the environment names; `kwargs` go to its constructor."""
    return VastMarketplace(find_api_key(env, home), market_url(env), **kwargs)
