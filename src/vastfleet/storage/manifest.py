"""The checkpoint manifest and its checks, shared by both stores, the agent API and the control plane.

A manifest names one checkpoint step and every file in it: `{step, files: {relpath: {size, sha256}}}`.
Relative paths are POSIX, below the checkpoint directory (no `..`, no absolute path, no backslash, no
empty or dot segment, no control character). `verify_objects` asks a store for the stored bytes' size and
sha256 of every file and lists what differs; a commit moves nothing unless that list is empty.

Types are strict: a step or size must be a JSON integer (not `"5"`, `5.0` or `true`).

Owns the key layout of checkpoint objects (`checkpoint_prefix`, `parse_checkpoint_key`): one checkpoint's
objects live under `jobs/<job>/epoch-<n>/step-<s>-<digest>/`, where the digest names the manifest's content,
so a key is never written with two different contents. A file whose bytes an earlier committed checkpoint of
the same job already stored is not uploaded again: its committed entry carries that object's `key`
(`object_key`), and the commit verifies the stored object like any other. Never talks to Redis or to the agent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vastfleet.errors import BadInput, ChecksumMismatch
from vastfleet.storage.base import CheckpointStore

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_RELPATH = 512

# Defaults the agent API applies to one checkpoint; a deployment may pass others.
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_BYTES = 2 * 1024**4  # 2 TiB: a sanity bound, not a quota


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    size: Annotated[int, Field(ge=0)]
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if not SHA256_HEX.match(value):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return value


class Manifest(BaseModel):
    """What the agent asks to upload and then commits: one step, its files."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    step: Annotated[int, Field(ge=0, le=10**15)]
    files: dict[str, FileEntry]

    @field_validator("files")
    @classmethod
    def _paths(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if not value:
            raise ValueError("a checkpoint holds at least one file")
        for rel in value:
            check_relpath(rel)
        return value

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def as_files(self) -> dict[str, dict[str, int | str]]:
        return {rel: {"size": e.size, "sha256": e.sha256} for rel, e in sorted(self.files.items())}

    @property
    def digest(self) -> str:
        """12 hex characters naming this manifest's content (step and files), for its storage prefix."""
        text = json.dumps({"step": self.step, "files": self.as_files()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_relpath(rel: str) -> str:
    """A safe relative POSIX path below a checkpoint directory, or BadInput naming what is wrong."""
    problem = None
    if not rel or len(rel) > MAX_RELPATH:
        problem = f"must be 1 to {MAX_RELPATH} characters"
    elif rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        problem = "must be relative, not absolute"
    elif "\\" in rel or _CONTROL.search(rel):
        problem = "must not contain a backslash or control characters"
    elif any(part in ("", ".", "..") for part in rel.split("/")):
        problem = "must not contain '..', '.' or empty segments"
    if problem:
        raise BadInput(f"checkpoint file path {rel[:80]!r} {problem}")
    return rel


def parse_manifest(
    data: object, *, max_files: int = DEFAULT_MAX_FILES, max_bytes: int = DEFAULT_MAX_BYTES
) -> Manifest:
    """Validate a manifest sent by an agent; every refusal is a BadInput with a readable message."""
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise BadInput(f"invalid checkpoint manifest: {loc}: {str(err['msg']).removeprefix('Value error, ')}")
    except BadInput as exc:  # check_relpath inside a validator surfaces as itself
        raise BadInput(f"invalid checkpoint manifest: {exc}") from None
    if len(manifest.files) > max_files:
        raise BadInput(f"checkpoint has {len(manifest.files)} files; the limit is {max_files}")
    if manifest.total_bytes > max_bytes:
        raise BadInput(f"checkpoint holds {manifest.total_bytes} bytes; the limit is {max_bytes}")
    return manifest


_KEY = re.compile(r"^jobs/([A-Za-z0-9._-]{1,128})/epoch-(\d{1,18})/step-(\d{1,18})(?:-[0-9a-f]{1,64})?/")


def checkpoint_prefix(job_id: str, epoch: int, step: int, digest: str = "") -> str:
    """Where one checkpoint's objects live: the epoch in the key keeps a stale attempt off newer ones, and the
    manifest's digest keeps two different uploads of one step from sharing a key."""
    if not re.match(r"^[A-Za-z0-9._-]{1,128}$", job_id):
        raise BadInput(f"job id {job_id[:40]!r} cannot name a storage key")
    if digest and not re.fullmatch(r"[0-9a-f]{1,64}", digest):
        raise BadInput("a checkpoint digest is lowercase hexadecimal")
    return f"jobs/{job_id}/epoch-{int(epoch)}/step-{int(step)}{'-' + digest if digest else ''}/"


def manifest_prefix(job_id: str, epoch: int, manifest: Manifest) -> str:
    return checkpoint_prefix(job_id, epoch, manifest.step, manifest.digest)


def parse_checkpoint_key(key: str) -> tuple[str, int, int] | None:
    """(job id, epoch, step) of an object key under `checkpoint_prefix`, or None for any other key."""
    m = _KEY.match(key)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def object_key(prefix: str, rel: str, meta: Mapping[str, Any]) -> str:
    """Where one file of a committed checkpoint is stored: under the checkpoint's own prefix, or, when the commit
    reused an object that an earlier checkpoint of the job stored with the same bytes, that object's key."""
    key = meta.get("key")
    return key if isinstance(key, str) and key else prefix + rel


def verify_objects(store: CheckpointStore, prefix: str, files: Mapping[str, FileEntry],
                   keys: Mapping[str, str] | None = None) -> list[str]:
    """Every difference between the manifest and the stored bytes, worded for the agent's log. `keys` names
    the object of a file stored elsewhere than `prefix + relpath` (a reused one)."""
    problems = []
    for rel, want in sorted(files.items()):
        got = store.stat((keys or {}).get(rel) or prefix + rel)
        if got is None:
            problems.append(f"{rel}: not uploaded")
        elif got[0] != want.size:
            problems.append(f"{rel}: stored {got[0]} bytes, manifest says {want.size}")
        elif got[1] != want.sha256:
            problems.append(f"{rel}: stored sha256 {got[1][:12]}..., manifest says {want.sha256[:12]}...")
    return problems


def require_verified(store: CheckpointStore, prefix: str, manifest: Manifest,
                     keys: Mapping[str, str] | None = None) -> None:
    """Raise ChecksumMismatch (HTTP 422) unless every object matches its manifest entry."""
    problems = verify_objects(store, prefix, manifest.files, keys)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ChecksumMismatch(f"checkpoint step {manifest.step} does not match its upload: {shown}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
