"""Encryption at rest of stored objects: the configuration, and what upload forms require.

The integration and end-to-end tests check the objects the services store on a real S3 server on
loopback (moto). moto ignores the encryption fields of a browser's POST upload, so the signed policy
that makes MinIO and S3 refuse an unencrypted upload is checked here, from the form itself.
"""
from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.config import Config as BotoConfig

from swms.storage import Bucket, encryption_from_config


def offline_client():
    # Signing a form needs no network: no server is contacted in this file.
    return boto3.client("s3", endpoint_url="http://127.0.0.1:9", aws_access_key_id="key",
                        aws_secret_access_key="secret", region_name="us-east-1",
                        config=BotoConfig(s3={"addressing_style": "path"}, signature_version="s3v4"))


@pytest.mark.parametrize(("config", "expected"), [
    ({}, {"ServerSideEncryption": "AES256"}),                                   # on by default
    ({"S3_ENCRYPTION": "AES256", "S3_KMS_KEY_ID": ""}, {"ServerSideEncryption": "AES256"}),
    ({"S3_ENCRYPTION": "aws:kms"}, {"ServerSideEncryption": "aws:kms"}),
    ({"S3_ENCRYPTION": "aws:kms", "S3_KMS_KEY_ID": "swms-proofs"},
     {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "swms-proofs"}),
    ({"S3_ENCRYPTION": "none"}, {}),
])
def test_encryption_settings(config, expected):
    assert encryption_from_config(config) == expected


@pytest.mark.parametrize(("config", "named"), [
    ({"S3_ENCRYPTION": "aes256"}, "S3_ENCRYPTION"),           # not a value S3 knows: refused, not guessed
    ({"S3_ENCRYPTION": "SSE-C"}, "S3_ENCRYPTION"),
    ({"S3_ENCRYPTION": "AES256", "S3_KMS_KEY_ID": "k1"}, "S3_KMS_KEY_ID"),   # a key that would be ignored
])
def test_a_wrong_encryption_setting_stops_the_service_naming_the_key(config, named):
    with pytest.raises(RuntimeError) as caught:
        encryption_from_config(config)
    assert named in str(caught.value) and "docs/configuration.md" in str(caught.value)


def signed_policy(form: dict) -> dict:
    return json.loads(base64.b64decode(form["fields"]["policy"]))


def test_an_upload_form_requires_encryption_in_its_signed_policy():
    bucket = Bucket(offline_client(), "swms-profile", encryption=encryption_from_config(
        {"S3_ENCRYPTION": "aws:kms", "S3_KMS_KEY_ID": "swms-photos"}))
    form = bucket.upload_form("incoming/p1/photo", 5_000_000, 600, content_type="image/jpeg")
    assert form["fields"]["x-amz-server-side-encryption"] == "aws:kms"
    assert form["fields"]["x-amz-server-side-encryption-aws-kms-key-id"] == "swms-photos"
    conditions = signed_policy(form)["conditions"]
    assert {"x-amz-server-side-encryption": "aws:kms"} in conditions
    assert {"x-amz-server-side-encryption-aws-kms-key-id": "swms-photos"} in conditions
    assert ["content-length-range", 1, 5_000_000] in conditions and {"Content-Type": "image/jpeg"} in conditions
    assert {"key": "incoming/p1/photo"} in conditions and {"bucket": "swms-profile"} in conditions


def test_without_encryption_the_form_has_no_encryption_field():
    form = Bucket(offline_client(), "swms-profile", encryption={}).upload_form("incoming/p1/photo", 100, 600)
    assert not any(name.startswith("x-amz-server-side-encryption") for name in form["fields"])
    assert not any("x-amz-server-side-encryption" in condition for condition in signed_policy(form)["conditions"]
                   if isinstance(condition, dict))
