"""Agent tokens, manifest checks, the local store's signed URLs, and the example job spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import FakeClock
from vastfleet.agent.tokens import InvalidToken, TokenSigner
from vastfleet.errors import BadInput, ChecksumMismatch, Forbidden
from vastfleet.spec import load_job_spec
from vastfleet.storage.local import LocalCheckpointStore
from vastfleet.storage.manifest import check_relpath, checkpoint_prefix, parse_manifest

SECRET = b"a-test-secret-of-32-bytes-length"
REPO = Path(__file__).resolve().parents[2]


def test_token_round_trip_carries_the_claims() -> None:
    signer = TokenSigner(SECRET)
    claims = signer.verify(signer.issue("j-abc", 4, "vf-j-abc-e4"))
    assert (claims.job_id, claims.epoch, claims.instance) == ("j-abc", 4, "vf-j-abc-e4")


def test_token_expires() -> None:
    clock = FakeClock(1_000_000.0)
    signer = TokenSigner(SECRET, ttl_s=60, clock=clock)
    token = signer.issue("j-abc", 1, 7)
    clock.now += 61
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token)


def test_token_of_another_secret_or_edited_payload_is_refused() -> None:
    token = TokenSigner(SECRET).issue("j-abc", 1, 7)
    with pytest.raises(InvalidToken):
        TokenSigner(b"another-secret-of-enough-length").verify(token)
    forged = TokenSigner(b"another-secret-of-enough-length").issue("j-abc", 2, 7)
    head, _, mac = token.split(".")
    with pytest.raises(InvalidToken):  # epoch 2's payload under epoch 1's MAC
        TokenSigner(SECRET).verify(f"{head}.{forged.split('.')[1]}.{mac}")


@given(st.text(max_size=200))
def test_garbage_never_verifies_and_never_echoes(garbage: str) -> None:
    with pytest.raises(InvalidToken) as info:
        TokenSigner(SECRET).verify(garbage)
    assert garbage not in str(info.value) or len(garbage) < 4


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"short")


@pytest.mark.parametrize("rel", ["a", "dir/file.bin", "model-00001-of-00004.safetensors", "a/b/c/d.json"])
def test_safe_relpaths_pass(rel: str) -> None:
    assert check_relpath(rel) == rel


def test_manifest_errors_name_the_problem() -> None:
    with pytest.raises(BadInput, match="sha256"):
        parse_manifest({"step": 1, "files": {"a": {"size": 1, "sha256": "xyz"}}})
    with pytest.raises(BadInput, match="at least one file"):
        parse_manifest({"step": 1, "files": {}})
    with pytest.raises(BadInput, match="step"):
        parse_manifest({"step": -1, "files": {"a": {"size": 1, "sha256": "a" * 64}}})
    with pytest.raises(BadInput, match="cannot name"):
        checkpoint_prefix("../other", 1, 1)


def test_local_store_urls_are_bound_to_method_key_and_bytes(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    store = LocalCheckpointStore(tmp_path, SECRET, "http://api:8000", clock=clock)
    url = store.presign_put("jobs/j/epoch-1/step-1/a", 3, "b" * 64, expires_s=60)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    exp, sig = int(query["exp"]), query["sig"]
    store.check_signature("PUT", "jobs/j/epoch-1/step-1/a", exp, sig, 3, "b" * 64)
    for method, key, size, sha in [
        ("GET", "jobs/j/epoch-1/step-1/a", 3, "b" * 64),
        ("PUT", "jobs/j/epoch-1/step-1/b", 3, "b" * 64),
        ("PUT", "jobs/j/epoch-1/step-1/a", 4, "b" * 64),
        ("PUT", "jobs/j/epoch-1/step-1/a", 3, "c" * 64),
    ]:
        with pytest.raises(Forbidden):
            store.check_signature(method, key, exp, sig, size, sha)
    clock.now += 61
    with pytest.raises(Forbidden, match="expired"):
        store.check_signature("PUT", "jobs/j/epoch-1/step-1/a", exp, sig, 3, "b" * 64)


def test_local_store_refuses_keys_leaving_its_root_and_bad_bytes(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path / "root", SECRET, "http://api")
    for key in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(BadInput):
            store.path_for(key)
    tmp = store.tmp_path("jobs/j/a")
    tmp.write_bytes(b"not what was signed")
    with pytest.raises(ChecksumMismatch):
        store.finish_put(tmp, "jobs/j/a", 3, "b" * 64)
    assert store.stat("jobs/j/a") is None and not tmp.exists()


def test_local_store_delete_prefix(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path, SECRET, "http://api")
    for key in ("jobs/a/epoch-1/step-1/x", "jobs/a/epoch-1/step-2/y", "jobs/b/epoch-1/step-1/x"):
        path = store.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"1")
    assert store.delete_prefix("jobs/a/") == 2
    assert store.stat("jobs/b/epoch-1/step-1/x") is not None


def test_example_spec_embeds_the_example_script() -> None:
    spec = load_job_spec(REPO / "examples" / "count.yaml")
    assert spec.setup is not None
    embedded = spec.setup.split("\n", 1)[1].rsplit("\nCOUNT_STEPS_EOF", 1)[0]
    assert embedded == (REPO / "examples" / "count_steps.py").read_text().rstrip("\n")
    assert "count_steps.py" in spec.run
