"""Stand-ins for bench/certificate_issue.py: registration.get_issuance_data and profile.get_photo_link
answering from a JSON file (``BENCH_ISSUANCE_FILE``) exactly as their contracts declare, so that
the benchmark measures the certificate service, not the other services' databases.

  nameko run --config <generated> bench.certificate_standins
"""
from __future__ import annotations

import json
import os

from nameko.rpc import rpc

from swms import errors
from swms.storage import make_s3_client

_DATA: dict | None = None
_S3_CLIENT = None   # one client, as profile's own ObjectStorage keeps (a boto3 client costs ~10 ms to make)


def _data() -> dict:
    global _DATA
    if _DATA is None:
        with open(os.environ["BENCH_ISSUANCE_FILE"], encoding="utf-8") as handle:
            _DATA = json.load(handle)
    return _DATA


class RegistrationStandIn:
    name = "registration"

    @rpc
    def get_issuance_data(self, payload):
        data = _data()["applications"].get(payload["application_id"])
        if data is None:
            raise errors.not_found("申请", "application_id")
        return data


class ProfileStandIn:
    name = "profile"

    @rpc
    def get_photo_link(self, payload):
        global _S3_CLIENT
        photo = _data()["photo"]
        if _S3_CLIENT is None:
            _S3_CLIENT = make_s3_client(photo["s3"])
        url = _S3_CLIENT.generate_presigned_url("get_object", Params={"Bucket": photo["bucket"], "Key": photo["key"]},
                                            ExpiresIn=120)
        return {"url": url, "content_type": "image/jpeg", "expires_in_seconds": 120}
