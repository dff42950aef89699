"""A checkpoint store on an S3-compatible bucket, reached by the agent only through presigned URLs.

The control plane holds the bucket credentials (boto3's usual chain, or keys given here); the instance gets
one short-lived URL per object. A PUT URL is signed with the object's sha256 as metadata
(`x-amz-meta-sha256`) and, unless disabled, S3's own `x-amz-checksum-sha256`, which AWS S3 checks on
receipt. Neither is proof on its own (an S3-compatible server may store a checksum header unchecked), so
`stat` defaults to `verify="read"`: it streams the stored object back and hashes it. `verify="checksum"`
trusts a full-object ChecksumSHA256 that the server reports (use it only where the server validates
checksums on PUT, as AWS S3 does) and falls back to reading when there is none.

With `write_once=True` (the default) every PUT URL is signed with `If-None-Match: *`, so S3 refuses (412) to
replace an object that exists: a committed checkpoint cannot be overwritten through any URL we hand out.
Turn it off only for an S3-compatible server that does not support conditional writes.

Owns the boto3 client and the translation of its errors into `StorageError`. Never talks to Redis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vastfleet.errors import BadInput, StorageError

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3CheckpointStore:
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        key_prefix: str = "",
        verify: Literal["read", "checksum"] = "read",
        checksum_header: bool = True,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "path",
        client: Any | None = None,
        write_once: bool = True,
    ) -> None:
        if not bucket:
            raise BadInput("an S3 checkpoint store needs a bucket name")
        if verify not in ("read", "checksum"):
            raise BadInput(f"verify must be 'read' or 'checksum', not {verify!r}")
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
        self.verify = verify
        self.checksum_header = checksum_header
        self.write_once = write_once
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": addressing_style},
                # Presigned URLs must not carry SDK-computed checksums of an empty body.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (demos and tests; production buckets pre-exist)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call(self.client.create_bucket, Bucket=self.bucket)

    # --- the CheckpointStore protocol ---------------------------------------------------------------

    def presign_put(self, key: str, size: int, sha256: str, expires_s: int = 900) -> str:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Metadata": {"sha256": sha256},
            "ContentType": "application/octet-stream",
        }
        if self.checksum_header:
            params["ChecksumSHA256"] = _b64(sha256)
        if self.write_once:
            params["IfNoneMatch"] = "*"
        url = self._call(self.client.generate_presigned_url, "put_object", Params=params, ExpiresIn=expires_s)
        return str(url)

    def put_headers(self, key: str, size: int, sha256: str) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream", "x-amz-meta-sha256": sha256}
        if self.checksum_header:
            headers["x-amz-checksum-sha256"] = _b64(sha256)
        if self.write_once:
            headers["If-None-Match"] = "*"
        return headers

    def presign_get(self, key: str, expires_s: int = 900) -> str:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        return str(
            self._call(self.client.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_s)
        )

    def stat(self, key: str) -> tuple[int, str] | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageError(f"S3 head of a checkpoint object failed: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable: {type(exc).__name__}") from None
        size = int(head["ContentLength"])
        reported = head.get("ChecksumSHA256")
        if (
            self.verify == "checksum"
            and reported
            and "-" not in reported
            and head.get("ChecksumType") != "COMPOSITE"
        ):
            try:
                return size, base64.b64decode(reported).hex()
            except (binascii.Error, ValueError):
                pass  # unreadable: fall through to reading the bytes
        return self._read_back(key, size)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                for i in range(0, len(keys), 1000):
                    self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True}
                    )
                    count += len(keys[i : i + 1000])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 delete under a checkpoint prefix failed: {type(exc).__name__}") from None
        return count

    def keys_under(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys += [obj["Key"][len(self.key_prefix):] for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 listing under a checkpoint prefix failed: {type(exc).__name__}") from None
        return sorted(keys)

    # --- helpers ------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.key_prefix + key

    def _read_back(self, key: str, head_size: int) -> tuple[int, str] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageError(f"S3 read-back of a checkpoint object failed: {_code(exc)}") from None
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        finally:
            body.close()
        return size, digest.hexdigest()

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 call failed: {type(exc).__name__}") from None


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
