"""Tokens: signed by identity's key, verified locally by each service."""
import datetime as dt

import pytest

from swms import errors
from swms.auth import (
    CITY,
    COUNTY,
    OFFICER,
    PROVINCE,
    SOCIAL_WORKER,
    Caller,
    generate_keypair,
    issue_token,
    verify_token,
)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


def test_round_trip_keeps_role_and_region(keys):
    private, public = keys
    token, expires = issue_token(private, Caller("o-1", OFFICER, "110105", COUNTY), dt.timedelta(minutes=5))
    assert verify_token(public, token) == Caller("o-1", OFFICER, "110105", COUNTY)
    assert expires > dt.datetime.now(dt.timezone.utc)


def test_expired_token(keys):
    private, public = keys
    token, _ = issue_token(private, Caller("p", SOCIAL_WORKER), dt.timedelta(seconds=-1))
    with pytest.raises(errors.SwmsError) as caught:
        verify_token(public, token)
    assert caught.value.code == "TOKEN_EXPIRED"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c"])
def test_garbage_tokens(keys, token):
    with pytest.raises(errors.SwmsError) as caught:
        verify_token(keys[1], token)
    assert caught.value.code in ("TOKEN_INVALID", "AUTH_REQUIRED")


def test_token_from_another_key_is_forged(keys):
    other_private, _ = generate_keypair()
    token, _ = issue_token(other_private, Caller("p", SOCIAL_WORKER), dt.timedelta(minutes=5))
    with pytest.raises(errors.SwmsError) as caught:
        verify_token(keys[1], token)
    assert caught.value.code == "TOKEN_INVALID"


def test_tampered_claims_fail(keys):
    import base64
    import json

    token, _ = issue_token(keys[0], Caller("p", SOCIAL_WORKER), dt.timedelta(minutes=5))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(errors.SwmsError) as caught:
        verify_token(keys[1], f"{header}.{forged_payload}.{signature}")
    assert caught.value.code == "TOKEN_INVALID"


@pytest.mark.parametrize("officer, county, covered", [
    (Caller("o", OFFICER, "110105", COUNTY), "110105", True),
    (Caller("o", OFFICER, "110105", COUNTY), "110106", False),
    (Caller("o", OFFICER, "110100", CITY), "110105", True),
    (Caller("o", OFFICER, "110100", CITY), "120105", False),
    (Caller("o", OFFICER, "110000", PROVINCE), "110105", True),
    (Caller("o", OFFICER, "440000", PROVINCE), "110105", False),
    (Caller("p", SOCIAL_WORKER), "110105", False),
])
def test_jurisdiction(officer, county, covered):
    assert officer.covers_region(county) is covered


def test_rotation_accepts_old_and_new_keys_until_the_old_is_removed(keys):
    old_private, old_public = keys
    new_private, new_public = generate_keypair()
    old_token, _ = issue_token(old_private, Caller("p", SOCIAL_WORKER), dt.timedelta(minutes=5))
    new_token, _ = issue_token(new_private, Caller("p", SOCIAL_WORKER), dt.timedelta(minutes=5))
    both = old_public + new_public
    assert verify_token(both, old_token).subject == verify_token(both, new_token).subject == "p"
    with pytest.raises(errors.SwmsError) as caught:
        verify_token(new_public, old_token)
    assert caught.value.code == "TOKEN_INVALID"
