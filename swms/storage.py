"""Object storage (MinIO in deployment, any S3 API in tests) through boto3.

One client per container, created in ``setup()`` (boto3 clients are thread-safe; sessions are not),
path-style addressing because MinIO and test servers do not do virtual-host buckets.

Everything stored holds personal data (ID photos, proofs, certificates), so every object is written
encrypted at rest by the server (``S3_ENCRYPTION``: SSE-S3 by default, SSE-KMS with a key of the
operator's KMS, or ``none`` for a server that cannot). The service's own writes ask for it on each
request, and upload forms carry it as a signed policy condition, so a browser's upload is refused
unless it is encrypted too: no bucket setting is relied on.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from nameko.extensions import DependencyProvider

from swms.config import SHARED, required

ENCRYPTIONS = ("AES256", "aws:kms", "none")


def encryption_from_config(config: dict[str, Any]) -> dict[str, str]:
    """The SSE request parameters that ``S3_ENCRYPTION`` (and ``S3_KMS_KEY_ID``) ask for."""
    mode = str(config.get("S3_ENCRYPTION") or "AES256").strip()
    if mode not in ENCRYPTIONS:
        raise RuntimeError(f"config key S3_ENCRYPTION is {mode!r}; it must be one of {', '.join(ENCRYPTIONS)} "
                           "(see docs/configuration.md)")
    key_id = str(config.get("S3_KMS_KEY_ID") or "").strip()
    if key_id and mode != "aws:kms":
        raise RuntimeError("config key S3_KMS_KEY_ID is set but S3_ENCRYPTION is not aws:kms (see docs/configuration.md)")
    if mode == "none":
        return {}
    return {"ServerSideEncryption": mode, **({"SSEKMSKeyId": key_id} if key_id else {})}


# The same parameters as fields of a browser's POST upload (and conditions of its signed policy).
_POST_FIELDS = {"ServerSideEncryption": "x-amz-server-side-encryption",
                "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id"}


def make_s3_client(config: dict[str, Any], endpoint_key: str = "S3_ENDPOINT_URL", attempts: int = 5,
                   connect_timeout: float = 5):
    return boto3.client(
        "s3",
        endpoint_url=config.get(endpoint_key) or None,
        aws_access_key_id=required(config, "S3_ACCESS_KEY"),
        aws_secret_access_key=required(config, "S3_SECRET_KEY"),
        region_name=config.get("S3_REGION") or "us-east-1",
        config=BotoConfig(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            max_pool_connections=max(10, SHARED.get(config, "max_workers")),
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=30,
        ),
    )


def is_missing(error: ClientError) -> bool:
    """The S3 error says: no such object."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class Bucket:
    def __init__(self, client, name: str, link_client=None, encryption: dict[str, str] | None = None):
        self.client = client
        self.name = name
        self.encryption = encryption if encryption is not None else {"ServerSideEncryption": "AES256"}
        # Download links are signed for the address people's browsers reach (S3_PUBLIC_ENDPOINT_URL),
        # which in a cluster differs from the internal one; signing needs no network call.
        self.link_client = link_client or client

    def ensure_exists(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.name)
        except ClientError:
            self.client.create_bucket(Bucket=self.name)

    def put(self, key: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None) -> str:
        """Store ``body`` privately; return its SHA-256 (hex), also kept as object metadata."""
        digest = hashlib.sha256(body).hexdigest()
        self.client.put_object(
            Bucket=self.name, Key=key, Body=body, ContentType=content_type,
            Metadata={"sha256": digest, **(metadata or {})}, **self.encryption,
        )
        return digest

    def put_if_absent(self, key: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None) -> bool:
        """Store ``body`` only if nothing is under ``key`` yet (If-None-Match: *); False if
        something was, which is left as it is: the first stored copy wins."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type,
                                   Metadata=metadata or {}, IfNoneMatch="*", **self.encryption)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
        return False

    def upload_form(self, key: str, max_bytes: int, expires_seconds: int, content_type: str | None = None) -> dict:
        """A presigned POST for exactly ``key``: 1 to ``max_bytes`` bytes, of ``content_type`` if
        given, stored encrypted (the server refuses the upload otherwise). Signed for the address
        browsers reach (S3_PUBLIC_ENDPOINT_URL when set). ``{"url": ..., "fields": {...}}``."""
        fields = {_POST_FIELDS[name]: value for name, value in self.encryption.items()}
        if content_type is not None:
            fields["Content-Type"] = content_type
        conditions = [["content-length-range", 1, max_bytes], *({name: value} for name, value in fields.items())]
        return self.link_client.generate_presigned_post(self.name, key, Fields=fields, Conditions=conditions,
                                                        ExpiresIn=expires_seconds)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Delete ``key``; an object already gone is not an error (deletes are retried)."""
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if not is_missing(exc):
                raise

    def keys_older_than(self, prefix: str, age: dt.timedelta, limit: int = 1000) -> list[str]:
        """Up to ``limit`` keys under ``prefix`` last written more than ``age`` ago (for sweepers)."""
        cutoff = dt.datetime.now(dt.timezone.utc) - age      # S3's LastModified is aware
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            found += [item["Key"] for item in page.get("Contents", []) if item["LastModified"] < cutoff]
            if len(found) >= limit:
                break
        return found[:limit]

    def download_url(self, key: str, expires_seconds: int, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.name, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self.link_client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)


def bucket_from_config(config: dict[str, Any], bucket_key: str, client=None) -> Bucket:
    """The bucket named by ``bucket_key``, as configured: its client (``client`` if given), the
    link client for S3_PUBLIC_ENDPOINT_URL, and the encryption (``S3_ENCRYPTION``)."""
    link_client = make_s3_client(config, "S3_PUBLIC_ENDPOINT_URL") if config.get("S3_PUBLIC_ENDPOINT_URL") else None
    return Bucket(client or make_s3_client(config), required(config, bucket_key), link_client,
                  encryption_from_config(config))


class ObjectStorage(DependencyProvider):
    """Gives the worker a :class:`Bucket`; the bucket name comes from ``bucket_key`` in config."""

    def __init__(self, bucket_key: str = "S3_BUCKET"):
        self.bucket_key = bucket_key

    def setup(self):
        config = self.container.config
        self.bucket = bucket_from_config(config, self.bucket_key)
        if str(config.get("S3_CREATE_BUCKET", "true")).lower() == "true":
            self.bucket.ensure_exists()

    def get_dependency(self, worker_ctx):
        return self.bucket
