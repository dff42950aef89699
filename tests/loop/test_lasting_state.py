"""Issue 11: a control plane restarted on its defaults keeps its checkpoints and its agents' tokens.

Before, the data directory defaulted to a temporary one (deleted at stop) and both secrets were random per
process: after a restart every committed checkpoint was gone and every running agent's token was refused.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vastfleet.datadir import default_data_dir, lasting_secret
from vastfleet.runtime import Settings, build_runtime
from vastfleet.storage.local import LocalCheckpointStore


def _plane(redis_url: str, **over: object):
    return build_runtime(Settings(redis_url=redis_url, api_port=0, run_scheduler=False, workers=0,
                                  api_token="t" * 24, log_level="WARNING", **over)).start()


def test_a_restart_on_the_defaults_keeps_checkpoints_and_tokens(redis_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    first = _plane(redis_url)
    try:
        assert first.data_dir == tmp_path / "xdg" / "vastfleet" == default_data_dir()
        token = first.tokens.issue("j-1", 3, "vf:j-1:3")
        store = LocalCheckpointStore(first.data_dir / "checkpoints", first.storage_secret, base_url="http://api")
        store.path_for("jobs/j-1/epoch-3/step-1/state.json").parent.mkdir(parents=True)
        store.path_for("jobs/j-1/epoch-3/step-1/state.json").write_text("{}")
        url = store.presign_get("jobs/j-1/epoch-3/step-1/state.json", 600)
    finally:
        first.stop()
    second = _plane(redis_url)
    try:
        assert second.tokens.verify(token).epoch == 3, "a running agent's token still opens its claim"
        again = LocalCheckpointStore(second.data_dir / "checkpoints", second.storage_secret)
        assert again.path_for("jobs/j-1/epoch-3/step-1/state.json").read_text() == "{}", "the checkpoint is there"
        key, query = url.split("/v1/blobs/", 1)[1].split("?", 1)
        params = dict(p.split("=", 1) for p in query.split("&"))
        again.check_signature("GET", key, int(params["exp"]), params["sig"])  # a URL handed out before verifies
    finally:
        second.stop()


def test_secrets_are_kept_private_and_a_given_one_wins(tmp_path: Path) -> None:
    made = lasting_secret(tmp_path, "agent_secret")
    path = tmp_path / "secrets" / "agent_secret"
    assert len(made) >= 32 and path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert lasting_secret(tmp_path, "agent_secret") == made
    assert lasting_secret(tmp_path, "agent_secret", "g" * 40) == "g" * 40
    path.write_text("short\n")
    with pytest.raises(ValueError, match="VASTFLEET_AGENT_SECRET"):
        lasting_secret(tmp_path, "agent_secret")
