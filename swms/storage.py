"""Object storage (MinIO in deployment, any S3 API in tests) through boto3.

One client per container, created in ``setup()`` (boto3 clients are thread-safe; sessions are not),
path-style addressing because MinIO and test servers do not do virtual-host buckets.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from nameko.extensions import DependencyProvider

from swms.config import required


def make_s3_client(config: dict[str, Any], endpoint_key: str = "S3_ENDPOINT_URL"):
    return boto3.client(
        "s3",
        endpoint_url=config.get(endpoint_key) or None,
        aws_access_key_id=required(config, "S3_ACCESS_KEY"),
        aws_secret_access_key=required(config, "S3_SECRET_KEY"),
        region_name=config.get("S3_REGION") or "us-east-1",
        config=BotoConfig(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            max_pool_connections=max(10, int(config.get("max_workers", 10))),
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


class Bucket:
    def __init__(self, client, name: str, link_client=None):
        self.client = client
        self.name = name
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
            Metadata={"sha256": digest, **(metadata or {})},
        )
        return digest

    def put_if_absent(self, key: str, body: bytes, content_type: str, metadata: dict[str, str] | None = None) -> bool:
        """Store ``body`` only if nothing is under ``key`` yet (If-None-Match: *); False if
        something was, which is left as it is: the first stored copy wins."""
        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type,
                                   Metadata=metadata or {}, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
        return False

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

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


class ObjectStorage(DependencyProvider):
    """Gives the worker a :class:`Bucket`; the bucket name comes from ``bucket_key`` in config."""

    def __init__(self, bucket_key: str = "S3_BUCKET"):
        self.bucket_key = bucket_key

    def setup(self):
        config = self.container.config
        link_client = make_s3_client(config, "S3_PUBLIC_ENDPOINT_URL") if config.get("S3_PUBLIC_ENDPOINT_URL") else None
        self.bucket = Bucket(make_s3_client(config), required(config, self.bucket_key), link_client)
        if str(config.get("S3_CREATE_BUCKET", "true")).lower() == "true":
            self.bucket.ensure_exists()

    def get_dependency(self, worker_ctx):
        return self.bucket
