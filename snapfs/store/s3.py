"""A repository in an S3 bucket (AWS or any S3-compatible store) — the only boto3 user.

Sync and thread-safe: one shared client with connect/read timeouts and bounded retries
(botocore's standard mode: throttling, 5xx and dropped connections, with backoff), so a
dead endpoint turns into a StoreError in seconds, never a hang. Every failure becomes one
snapfs error with a one-line message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from snapfs.errors import ObjectNotFound, RepositoryNotFound, StoreError, UsageError

MULTIPART_THRESHOLD = 64 << 20
PART_SIZE = 16 << 20
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def _env_number(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{name} must be a whole number of at least 1")
    return int(raw)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (bucket, 'some/prefix/')."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not 3 <= len(bucket) <= 63:
        raise UsageError(f"{url}: an S3 bucket name has 3 to 63 characters")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class RangeReader:
    """The body of one ranged GET, read in exact pieces; a short or broken body is a
    StoreError like any failed request. Close it (or use ``with``) to free the
    connection when stopping early."""

    def __init__(
        self, body: Any, name: str, length: int, error: Callable[[Exception, str], Exception]
    ) -> None:
        self._body, self._name, self._left, self._error = body, name, length, error

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (never more than the range has left)."""
        if n > self._left:
            raise StoreError(f"{self._name}: read past the requested range")
        parts: list[bytes] = []
        want = n
        while want:
            try:
                part: bytes = self._body.read(want)
            except (bex.BotoCoreError, bex.ClientError, OSError) as e:
                raise self._error(e, f"reading {self._name}") from None
            if not part:
                raise StoreError(f"{self._name} is shorter than expected (truncated?)")
            parts.append(part)
            want -= len(part)
        self._left -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Store:
    parallelism = 8
    remote = True

    def __init__(
        self,
        url: str,
        endpoint: str | None = None,
        *,
        max_attempts: int | None = None,
        connect_timeout: float = 5,
        read_timeout: float | None = None,
    ) -> None:
        max_attempts = max_attempts or _env_number("SNAPFS_S3_RETRIES", 5)
        read_timeout = read_timeout or _env_number("SNAPFS_S3_TIMEOUT", 30)
        self.bucket, self.prefix = parse_s3_url(url)
        self.location = url
        endpoint = (
            endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        self.endpoint = endpoint or "AWS"
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=32,
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=session.region_name or "us-east-1",
            config=config,
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _error(self, e: Exception, what: str) -> Exception:
        """One snapfs error, with one line a user can act on, for any boto failure."""
        if isinstance(e, bex.NoCredentialsError):
            return StoreError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(e, bex.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code == "NoSuchBucket":
                return RepositoryNotFound(
                    f"S3 bucket {self.bucket} does not exist ({self.endpoint})"
                )
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{what} is missing from the repository")
            if code in _CREDENTIAL_CODES:
                return StoreError(f"S3 rejected the credentials ({code}) at {self.endpoint}")
            if code in ("AccessDenied", "403"):
                return StoreError(f"S3 access denied: {what} in bucket {self.bucket}")
            return StoreError(f"S3 {what} failed: {code} {err.get('Message', '')}".strip())
        if isinstance(e, bex.BotoCoreError):
            return StoreError(f"cannot reach S3 at {self.endpoint}: {e}")
        return e

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            if not self.exists(name):
                raise ObjectNotFound(f"{name} is missing from the repository")
            return b""
        body = self._get_object(name, offset, length)
        try:
            data: bytes = body.read()
        except (bex.BotoCoreError, bex.ClientError) as e:
            body.close()  # a half-read connection cannot be reused
            raise self._error(e, f"reading {name}") from None
        if length is not None and len(data) != length:
            raise StoreError(f"{name} is shorter than expected (truncated?)")
        return data

    def open_range(self, name: str, offset: int, length: int) -> RangeReader:
        """One GET whose body is read piece by piece: a reader of a long range (a pack's
        worth of blobs) holds one piece in memory, not the range, and can work on a
        piece while the next arrives."""
        return RangeReader(self._get_object(name, offset, length), name, length, self._error)

    def _get_object(self, name: str, offset: int, length: int | None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            return self._client.get_object(**kwargs)["Body"]
        except (bex.BotoCoreError, bex.ClientError) as e:
            if isinstance(e, bex.ClientError) and e.response.get("Error", {}).get("Code") in (
                "InvalidRange",
                "416",
            ):
                raise StoreError(f"{name} is shorter than expected (truncated?)") from None
            raise self._error(e, f"reading {name}") from None

    def put(self, name: str, data: bytes) -> None:
        """Returns only once S3 acknowledged the whole object (MD5-checked by S3)."""
        try:
            if len(data) < MULTIPART_THRESHOLD:
                md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
                self._client.put_object(
                    Bucket=self.bucket, Key=self._key(name), Body=data, ContentMD5=md5
                )
            else:
                self._put_multipart(self._key(name), data)
        except (bex.BotoCoreError, bex.ClientError) as e:
            raise self._error(e, f"writing {name}") from None

    def _put_multipart(self, key: str, data: bytes) -> None:
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)
        uid = upload["UploadId"]
        try:
            parts = []
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), PART_SIZE), 1):
                chunk = bytes(view[start : start + PART_SIZE])
                md5 = base64.b64encode(hashlib.md5(chunk, usedforsecurity=False).digest()).decode()
                res = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=uid,
                    PartNumber=number,
                    Body=chunk,
                    ContentMD5=md5,
                )
                parts.append({"ETag": res["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # what cannot be aborted is left to the bucket's lifecycle rules
            with contextlib.suppress(bex.BotoCoreError, bex.ClientError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uid)
            raise

    def delete(self, name: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (bex.BotoCoreError, bex.ClientError) as e:
            raise self._error(e, f"deleting {name}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(self.prefix) :], int(obj["Size"])
        except (bex.BotoCoreError, bex.ClientError) as e:
            raise self._error(e, f"listing {prefix or 'the repository'}") from None

    def exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except (bex.BotoCoreError, bex.ClientError) as e:
            if isinstance(e, bex.ClientError) and e.response.get("Error", {}).get("Code") == "403":
                self.get(name, 0, 1)  # a HEAD has no error body: a GET says what is wrong
            err = self._error(e, name)
            if isinstance(err, ObjectNotFound):
                return False
            raise err from None
        return True

    def check_bucket(self) -> None:
        """RepositoryNotFound naming the bucket if it does not exist."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except bex.ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise RepositoryNotFound(
                    f"S3 bucket {self.bucket} does not exist ({self.endpoint})"
                ) from None
            raise self._error(e, f"checking bucket {self.bucket}") from None
        except bex.BotoCoreError as e:
            raise self._error(e, f"checking bucket {self.bucket}") from None

    def ensure_bucket(self) -> None:
        """For ``init``: create the bucket when it does not exist yet, as restic does."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except bex.ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket"):
                raise self._error(e, f"checking bucket {self.bucket}") from None
        except bex.BotoCoreError as e:
            raise self._error(e, f"checking bucket {self.bucket}") from None
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except (bex.BotoCoreError, bex.ClientError) as e:
            raise self._error(e, f"creating bucket {self.bucket}") from None
