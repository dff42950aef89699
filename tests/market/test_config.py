"""`marketplace_from_env`: the key where vastai keeps it, the server from VASTFLEET_MARKET_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastfleet.errors import BadInput, MarketAuthError
from vastfleet.market.config import find_api_key, market_url, marketplace_from_env
from vastfleet.market.vast import VastMarketplace


def test_env_key_wins(tmp_path: Path) -> None:
    (tmp_path / ".vast_api_key").write_text("file-key\n")
    assert find_api_key({"VAST_API_KEY": " env-key ", "HOME": str(tmp_path)}) == "env-key"


def test_xdg_file_then_legacy_file(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    (tmp_path / ".vast_api_key").write_text("legacy-key\n")
    assert find_api_key(env) == "legacy-key"
    (tmp_path / "xdg" / "vastai").mkdir(parents=True)
    (tmp_path / "xdg" / "vastai" / "vast_api_key").write_text("xdg-key\n")
    assert find_api_key(env) == "xdg-key"
    # without XDG_CONFIG_HOME the package looks in ~/.config
    (tmp_path / ".config" / "vastai").mkdir(parents=True)
    (tmp_path / ".config" / "vastai" / "vast_api_key").write_text("dot-config-key")
    assert find_api_key({"HOME": str(tmp_path)}) == "dot-config-key"


def test_no_key_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(MarketAuthError, match="VAST_API_KEY") as info:
        find_api_key({"HOME": str(tmp_path)})
    assert "vastai set api-key" in str(info.value)


def test_url_default_and_validation() -> None:
    assert market_url({}) == "https://console.vast.ai"
    assert market_url({"VASTFLEET_MARKET_URL": "http://127.0.0.1:8123/"}) == "http://127.0.0.1:8123"
    with pytest.raises(BadInput):
        market_url({"VASTFLEET_MARKET_URL": "console.vast.ai"})


def test_marketplace_from_env(tmp_path: Path) -> None:
    m = marketplace_from_env(
        {"VAST_API_KEY": "k-123", "VASTFLEET_MARKET_URL": "http://127.0.0.1:9", "HOME": str(tmp_path)},
        page_size=10,
    )
    assert isinstance(m, VastMarketplace) and m.server_url == "http://127.0.0.1:9"
    assert "k-123" not in repr(m)
