"""A Ray run as vastfleet checkpoints, without Ray: which files of a run directory count (only those Ray's
snapshot names), and the API's reuse of objects an earlier committed checkpoint stored (never uploaded again,
never overwritten, still verified at every commit and restore)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from tests.agent.conftest import Client, call, manifest, replace_instance, running
from tests.agent.test_agent_faults import agent_module
from vastfleet.storage.local import LocalCheckpointStore
from vastfleet.storage.manifest import object_key


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_only_the_checkpoints_a_ray_train_snapshot_names_count(tmp_path: Path) -> None:
    agent = agent_module()
    home = tmp_path / ".vastfleet"
    run = home / "ray" / "job-1"
    named = {"version": 0, "checkpoint_dir_name": "checkpoint_000004", "metrics": {"step": 4}}
    latest = {**named, "checkpoint_dir_name": "checkpoint_000006"}
    snap = write(run / "checkpoint_manager_snapshot.json", json.dumps(
        {"ray_version": "2.60.0", "checkpoint_results": [named, latest], "latest_checkpoint_result": latest,
         "pending_training_results": [], "current_report_index": 6}))
    write(run / ".validate_storage_marker", "")
    write(run / "checkpoint_000004" / "state.json", "4")
    write(run / "checkpoint_000006" / "state.json", "6")
    write(run / "checkpoint_000006" / "sub" / "model.bin", b"\0" * 10)
    write(run / "checkpoint_000002" / "state.json", "2")  # dropped by num_to_keep, being deleted
    write(run / "checkpoint_000008" / "state.json", "8")  # being written: not in the snapshot yet
    (run / "checkpoint_000006" / "alias").symlink_to(tmp_path)  # never followed
    files = agent.ray_tree(str(run), str(snap), str(home))
    assert set(files) == {
        "ray/job-1/checkpoint_manager_snapshot.json", "ray/job-1/.validate_storage_marker",
        "ray/job-1/checkpoint_000004/state.json", "ray/job-1/checkpoint_000006/state.json",
        "ray/job-1/checkpoint_000006/sub/model.bin",
    }
    assert files["ray/job-1/checkpoint_000006/state.json"] == {"size": 1, "sha256": hashlib.sha256(b"6").hexdigest()}
    snap.write_text('{"checkpoint_results": [')  # Ray is writing it: not a checkpoint yet
    assert agent.ray_tree(str(run), str(snap), str(home)) is None


def test_a_tune_experiment_state_names_its_trials_and_checkpoints_inside_nested_json_and_pickles(
    tmp_path: Path,
) -> None:
    agent = agent_module()
    home = tmp_path / ".vastfleet"
    run = home / "ray" / "job-2"
    trial = "trainable_5e1b2_00000_0_lr=0.4000_2026-12-02_03-13-59"
    # Tune keeps a trial's checkpoint paths only inside cloudpickled objects, hex-encoded in the JSON
    manager = pickle.dumps({"_checkpoint_results": [f"/old/instance/ray/job-2/{trial}/checkpoint_000003"]}).hex()
    trial_state = json.dumps({"trial_id": "5e1b2_00000", "status": "RUNNING", "relative_logdir": trial})
    runtime = json.dumps({"checkpoint_manager": {"_type": "CLOUDPICKLE_FALLBACK", "value": manager}})
    snap = write(run / "experiment_state-2026-12-02_03-13-59.json",
                 json.dumps({"trial_data": [[trial_state, runtime]], "runner_data": {"_iteration": 9}}))
    for name in ("tuner.pkl", "basic-variant-state-2026-12-02_03-13-59.json"):
        write(run / name, name)
    write(run / trial / "result.json", "{}\n")
    write(run / trial / "checkpoint_000003" / "state.json", "3")
    write(run / trial / "checkpoint_000004" / "state.json", "4")  # written after the snapshot
    write(run / "trainable_5e1b2_00009_9_lr=1.0" / "result.json", "{}")  # a trial the state does not know
    files = agent.ray_tree(str(run), str(snap), str(home))
    top = "ray/job-2/"
    assert set(files) == {top + snap.name, top + "tuner.pkl", top + "basic-variant-state-2026-12-02_03-13-59.json",
                          f"{top}{trial}/result.json", f"{top}{trial}/checkpoint_000003/state.json"}


def _stored_keys(store: LocalCheckpointStore) -> dict[str, bytes]:
    return {str(p.relative_to(store.root)): p.read_bytes() for p in Path(store.root).rglob("*")
            if p.is_file() and "/.tmp" not in str(p) and not p.name.startswith(".")}


def _put_all(tc: Any, session: str, job_id: str, m: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    urls = call(tc, session, job_id, "presign-upload", m).json()["files"]
    for rel, entry in urls.items():
        if not entry.get("stored"):
            assert tc.put(entry["url"], content=files[rel], headers=entry["headers"]).status_code == 200
    return {rel: bool(entry.get("stored")) for rel, entry in urls.items()}


def test_files_an_earlier_checkpoint_stored_are_not_uploaded_again_yet_every_commit_verifies_them(
    client: Client,
) -> None:
    tc, api, job, session = running(client)
    store = api.ckpt
    assert isinstance(store, LocalCheckpointStore)
    first = {"ray/r/checkpoint_000004/model.bin": b"w" * 5000, "ray/r/snapshot.json": b'{"at": 4}'}
    m1 = manifest(1, first)
    assert _put_all(tc, session, job.id, m1, first) == dict.fromkeys(first, False)
    assert call(tc, session, job.id, "commit", m1).json()["uploaded_bytes"] == 5009
    before = _stored_keys(store)

    second = {**first, "ray/r/snapshot.json": b'{"at": 8}', "ray/r/checkpoint_000008/model.bin": b"v" * 4000}
    m2 = manifest(2, second)
    assert _put_all(tc, session, job.id, m2, second) == {
        "ray/r/checkpoint_000004/model.bin": True, "ray/r/snapshot.json": False,
        "ray/r/checkpoint_000008/model.bin": False}
    ans = call(tc, session, job.id, "commit", m2).json()
    assert (ans["reused_files"], ans["uploaded_bytes"], ans["bytes"]) == (1, 4009, 9009)
    after = _stored_keys(store)
    assert all(after[k] == v for k, v in before.items()), "no stored object was rewritten"
    assert len(after) == len(before) + 2, "only the new bytes were stored"
    ref = api.store.get(job.id).latest_checkpoint
    assert ref is not None and ref.step == 2
    reused = ref.files["ray/r/checkpoint_000004/model.bin"]
    assert reused["key"] == api.store.get(job.id).checkpoint_history[0].prefix + "ray/r/checkpoint_000004/model.bin"
    assert "key" not in ref.files["ray/r/snapshot.json"]

    # the next attempt, on a new instance, restores the reused object from where it is stored
    replace_instance(api.store, job.id, 2002)
    job2 = api.store.get(job.id)
    session2 = call(tc, api.token(job2), job.id, "claim", {"nonce": "second-nonce-0123456789"}).json()["session"]
    restore = call(tc, session2, job.id, "presign-download").json()["checkpoint"]
    for rel, entry in restore["files"].items():
        got = tc.get(entry["url"])
        assert got.status_code == 200 and got.content == second[rel], rel
        assert set(entry) == {"size", "sha256", "url"}

    # a stored object that went bad fails the commit that reuses it, naming it; nothing moves
    damaged = store.path_for(object_key(ref.prefix, "ray/r/checkpoint_000004/model.bin", reused))
    damaged.write_bytes(b"x" * 5000)
    third = {**second, "ray/r/snapshot.json": b'{"at": 12}'}
    m3 = manifest(3, third)
    _put_all(tc, session2, job.id, m3, third)
    refused = call(tc, session2, job.id, "commit", m3)
    assert refused.status_code == 422 and "checkpoint_000004/model.bin: stored sha256" in refused.text
    assert api.store.get(job.id).latest_checkpoint.step == 2  # type: ignore[union-attr]
    # and the API's own check at restore-failed sees it too, through the reused key
    bad = call(tc, session2, job.id, "restore-failed", {"step": 2, "prefix": ref.prefix, "reason": "sha differs"})
    assert bad.status_code == 200 and bad.json()["verified"] is False, bad.text
    assert bad.json()["checkpoint"]["step"] == 1  # step 2 dropped; step 1 holds that object too: next report


def test_the_offers_effective_cores_reach_the_instance_env() -> None:
    from vastfleet.agent.onstart import agent_env

    assert agent_env("http://api:1", "t", "j", 1, cpus=12.8)["VASTFLEET_CPUS"] == "12"
    assert "VASTFLEET_CPUS" not in agent_env("http://api:1", "t", "j", 1)  # unknown: Ray counts them itself


def test_the_ray_examples_embed_their_scripts() -> None:
    from vastfleet.spec import load_job_spec

    examples = Path(__file__).resolve().parents[2] / "examples"
    for name, marker in (("ray_train", "RAY_TRAIN_EOF"), ("ray_tune", "RAY_TUNE_EOF")):
        spec = load_job_spec(examples / f"{name}.yaml")
        assert spec.setup is not None and spec.runtime.value == "ray" and f"{name}.py" in spec.run
        embedded = spec.setup.split("\n", 1)[1].rsplit(f"\n{marker}", 1)[0]
        assert embedded == (examples / f"{name}.py").read_text().rstrip("\n"), f"{name}.yaml's copy differs"


def test_a_checkpoint_file_over_the_apis_body_cap_streams_into_the_local_store(
        redis_url: str, local_store: LocalCheckpointStore) -> None:
    """The body cap guards the JSON routes; a blob PUT is capped by the size its URL signs, streamed to disk."""
    import httpx
    import redis

    from tests.agent.conftest import NONCE, SETTINGS, booted, count_spec
    from vastfleet.agent.tokens import TokenSigner
    from vastfleet.api import ApiContext, create_app
    from vastfleet.api.agent_routes import agent_router
    from vastfleet.api.serve import ServerThread
    from vastfleet.queue import JobStore

    client = redis.Redis.from_url(redis_url)
    store, signer = JobStore(client), TokenSigner(b"agent-test-secret-0123456789")
    ctx = ApiContext(store=store, token="user-token-0123456789", max_body_bytes=2048, max_agent_body_bytes=4096,
                     agent_router=agent_router(store, local_store, signer, None, SETTINGS))
    with ServerThread(create_app(ctx)) as url:
        local_store.base_url = url
        job = booted(store, count_spec())
        agent = f"{url}/v1/agent/jobs/{job.id}"
        session = httpx.post(f"{agent}/claim", json={"nonce": NONCE},
                             headers={"Authorization": f"Bearer {signer.issue(job.id, job.epoch, 1001)}"}).json()
        auth = {"Authorization": f"Bearer {session['session']}"}
        weights = b"w" * 100_000  # 50 times the cap on request bodies
        m = manifest(1, {"weights.bin": weights})
        entry = httpx.post(f"{agent}/presign-upload", json=m, headers=auth).json()["files"]["weights.bin"]
        assert httpx.put(entry["url"], content=weights, headers=entry["headers"]).status_code == 200
        assert httpx.post(f"{agent}/commit", json=m, headers=auth).json()["committed"] is True
        # a body past its signed size is still refused, by the blob route itself
        m2 = manifest(2, {"weights.bin": weights + b"!"})
        entry = httpx.post(f"{agent}/presign-upload", json=m2, headers=auth).json()["files"]["weights.bin"]
        assert httpx.put(entry["url"], content=weights + b"!!", headers={**entry["headers"], "Content-Length":
                         str(len(weights) + 2)}).status_code == 422
    client.close()
