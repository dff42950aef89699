"""Checkpoint storage: the store protocol, an S3-compatible store, a local directory store, manifests."""

from vastfleet.storage.base import CheckpointStore
from vastfleet.storage.local import LocalCheckpointStore
from vastfleet.storage.manifest import (
    FileEntry,
    Manifest,
    check_relpath,
    checkpoint_prefix,
    parse_manifest,
    require_verified,
    verify_objects,
)
from vastfleet.storage.s3 import S3CheckpointStore

__all__ = [
    "CheckpointStore",
    "FileEntry",
    "LocalCheckpointStore",
    "Manifest",
    "S3CheckpointStore",
    "check_relpath",
    "checkpoint_prefix",
    "parse_manifest",
    "require_verified",
    "verify_objects",
]
