"""S3CheckpointStore against a real S3 API (moto in server mode on loopback), and the agent over it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import AgentApi, booted, count_spec, make_api, output
from tests.helpers import free_port, wait_port
from vastfleet.errors import ChecksumMismatch
from vastfleet.spec import JobState
from vastfleet.storage.manifest import parse_manifest, require_verified
from vastfleet.storage.s3 import S3CheckpointStore

MOTO = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "moto_server"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    binary = str(MOTO) if MOTO.exists() else shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, 20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3(moto_url: str, request: pytest.FixtureRequest) -> S3CheckpointStore:
    bucket = "vf-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    store = S3CheckpointStore(
        bucket, endpoint_url=moto_url, region="us-east-1", access_key_id="test", secret_access_key="test"
    )
    store.ensure_bucket()
    return store


def put(url: str, headers: dict[str, str], body: bytes) -> int:
    req = urllib.request.Request(
        url, data=body, method="PUT", headers={**headers, "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def test_presigned_put_then_stat_reads_the_stored_bytes(s3: S3CheckpointStore) -> None:
    body = b"checkpoint bytes" * 1000
    sha = hashlib.sha256(body).hexdigest()
    key = "jobs/j-x/epoch-1/step-5/model.bin"
    assert s3.stat(key) is None
    assert put(s3.presign_put(key, len(body), sha), s3.put_headers(key, len(body), sha), body) == 200
    assert s3.stat(key) == (len(body), sha)
    with urllib.request.urlopen(s3.presign_get(key), timeout=10) as resp:
        assert resp.read() == body
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha


def test_forged_upload_is_caught_by_reading_back(s3: S3CheckpointStore) -> None:
    honest, forged = b"honest" * 100, b"forged" * 100
    sha = hashlib.sha256(honest).hexdigest()
    key = "jobs/j-x/epoch-1/step-6/a"
    # The uploader sends the honest sha256 in every header but other bytes (moto, like some S3-compatible
    # servers, does not check the checksum header): only reading the object back tells.
    put(s3.presign_put(key, len(honest), sha), s3.put_headers(key, len(honest), sha), forged)
    manifest = parse_manifest({"step": 6, "files": {"a": {"size": len(honest), "sha256": sha}}})
    with pytest.raises(ChecksumMismatch, match="does not match"):
        require_verified(s3, "jobs/j-x/epoch-1/step-6/", manifest)


def test_put_urls_are_write_once(s3: S3CheckpointStore) -> None:
    first, other = b"committed weights", b"overwritten behind our back"
    key = "jobs/j-x/epoch-1/step-7-abc/model.bin"
    sha = hashlib.sha256(first).hexdigest()
    assert put(s3.presign_put(key, len(first), sha), s3.put_headers(key, len(first), sha), first) == 200
    for body in (other, first):  # any URL we hand out for that key, with other bytes or the same ones
        sha2 = hashlib.sha256(body).hexdigest()
        with pytest.raises(urllib.error.HTTPError) as refused:
            put(s3.presign_put(key, len(body), sha2), s3.put_headers(key, len(body), sha2), body)
        assert refused.value.code == 412
    assert s3.stat(key) == (len(first), sha)


def test_delete_prefix_removes_only_that_prefix(s3: S3CheckpointStore) -> None:
    for key in ("jobs/a/epoch-1/step-1/x", "jobs/a/epoch-1/step-1/y", "jobs/b/epoch-1/step-1/x"):
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"1")
    assert s3.delete_prefix("jobs/a/") == 2
    assert s3.stat("jobs/a/epoch-1/step-1/x") is None and s3.stat("jobs/b/epoch-1/step-1/x") is not None


def test_agent_checkpoints_through_s3(
    redis_url: str, s3: S3CheckpointStore, gpu_bin: Path, tmp_path: Path
) -> None:
    gen = make_api(redis_url, s3)
    api: AgentApi = next(gen)
    try:
        job = booted(api.store, count_spec(steps=10, every=5))
        log = output(api.start_agent(job, tmp_path / "w", gpu_bin))
        done = api.store.get(job.id)
        assert done.state == JobState.SUCCEEDED, log
        ref = done.latest_checkpoint
        assert ref is not None and ref.step == 10
        body = s3.client.get_object(Bucket=s3.bucket, Key=ref.prefix + "state.json")["Body"].read()
        assert json.loads(body)["counted"] == list(range(1, 11))
        assert "X-Amz-Signature" not in log
    finally:
        gen.close()
