"""Identity over a real RabbitMQ, on SQLite and on PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.identity import domain
from services.identity.models import Account
from swms.errors import SwmsError
from tests.support import rpc_client, session_for, valid_id, worker_token

pytestmark = pytest.mark.integration

HOLDER_ID = valid_id("11010519900307123")
OTHER_ID = valid_id("44030519950612402")


@pytest.fixture
def identity(start_service):
    config = start_service("identity")
    with session_for(config["DB_URL"]) as session:
        report = domain.import_passers(session, [
            {"name": "李明华", "id_number": HOLDER_ID, "level": "社会工作师", "management_number": "202611000000123456",
             "exam_year": "2026", "province": "11"},
            {"name": "欧阳·娜仁", "id_number": OTHER_ID, "level": "助理社会工作师",
             "management_number": "202644000000654321", "exam_year": "2026", "province": "44"},
        ])
        session.commit()
    assert report.added == 2
    return config


def sign_up(client, **overrides):
    request = {"name": "李明华", "id_number": HOLDER_ID, "email": "li@example.cn", "password": "Strong-pass-1"}
    request.update(overrides)
    return client.identity.sign_up(request)


def account_count(config) -> int:
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(func.count()).select_from(Account)).scalar_one()


def test_check_passer_fills_in_management_number_and_level(identity, amqp_uri):
    with rpc_client(amqp_uri) as client:
        answer = client.identity.check_passer({"name": "李明华", "id_number": HOLDER_ID.lower()})
    assert answer == {"level": "社会工作师", "management_number": "202611000000123456", "exam_year": 2026}


def test_name_variants_are_normalised(identity, amqp_uri):
    with rpc_client(amqp_uri) as client:
        # full-width middle dot and spaces, as people type them
        answer = client.identity.check_passer({"name": " 欧阳・娜仁 ", "id_number": OTHER_ID})
    assert answer["level"] == "助理社会工作师"


@pytest.mark.parametrize("request_body, code, field", [
    ({"name": "李明华", "id_number": "360426199101010072"}, "ID_NUMBER_INVALID", "id_number"),
    ({"name": "李明华", "id_number": valid_id("11010519900307124")}, "PASSER_NOT_FOUND", "id_number"),
    ({"name": "李明", "id_number": HOLDER_ID}, "NAME_MISMATCH", "name"),
    ({"name": "", "id_number": HOLDER_ID}, "VALIDATION_FAILED", "name"),
    ({"name": "李明华", "id_number": HOLDER_ID, "extra": 1}, "VALIDATION_FAILED", "extra"),
])
def test_check_passer_errors_name_the_field(identity, amqp_uri, request_body, code, field):
    with rpc_client(amqp_uri) as client, pytest.raises(SwmsError) as caught:
        client.identity.check_passer(request_body)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert caught.value.message  # a Chinese sentence for people
    if code == "ID_NUMBER_INVALID":
        assert "请输入正确的身份证号" in caught.value.message


def test_sign_up_once_then_login_by_id_or_email(identity, amqp_uri):
    with rpc_client(amqp_uri) as client:
        account = sign_up(client)
        assert account["id_number_masked"] == "110***********1239"
        assert account["management_number"] == "202611000000123456"
        with pytest.raises(SwmsError) as caught:
            sign_up(client, email="other@example.cn")
        assert caught.value.code == "ALREADY_REGISTERED"
        by_id = client.identity.login({"login": HOLDER_ID, "password": "Strong-pass-1"})
        by_email = client.identity.login({"login": "LI@example.cn", "password": "Strong-pass-1"})
    assert by_id["subject"] == by_email["subject"] == account["person_id"]
    assert by_id["role"] == "social_worker"
    assert account_count(identity) == 1


def test_wrong_password_and_unknown_login_look_the_same(identity, amqp_uri):
    with rpc_client(amqp_uri) as client:
        sign_up(client)
        errors = []
        for login, password in ((HOLDER_ID, "wrong-password"), ("nobody@example.cn", "Strong-pass-1")):
            with pytest.raises(SwmsError) as caught:
                client.identity.login({"login": login, "password": password})
            errors.append((caught.value.code, caught.value.message))
    assert errors[0] == errors[1] == ("LOGIN_FAILED", "账号或密码错误")


def test_bad_sign_up_stores_nothing(identity, amqp_uri):
    with rpc_client(amqp_uri) as client:
        for overrides in ({"password": "short"}, {"email": "not-an-email"}, {"name": "李明"},
                          {"id_number": "11010519900307123"}):
            with pytest.raises(SwmsError):
                sign_up(client, **overrides)
    assert account_count(identity) == 0


def test_person_data_only_for_the_person(identity, amqp_uri, keys_dir):
    with rpc_client(amqp_uri) as client:
        person_id = sign_up(client)["person_id"]
        with pytest.raises(SwmsError) as caught:
            client.identity.get_person({"person_id": person_id})
        assert caught.value.code == "AUTH_REQUIRED"
    with rpc_client(amqp_uri, worker_token(keys_dir, person_id)) as own:
        assert own.identity.get_person({"person_id": person_id})["id_number"] == HOLDER_ID
    other = "00000000-0000-4000-8000-000000000000"
    with rpc_client(amqp_uri, worker_token(keys_dir, other)) as stranger, pytest.raises(SwmsError) as caught:
        stranger.identity.get_person({"person_id": person_id})
    assert caught.value.code == "FORBIDDEN"


def test_forged_token_is_refused(identity, amqp_uri, tmp_path):
    from swms.devkeys import ensure_dev_keys
    from tests.support import worker_token as mint

    forger_keys = ensure_dev_keys(tmp_path / "forger")
    with rpc_client(amqp_uri) as client:
        person_id = sign_up(client)["person_id"]
    with rpc_client(amqp_uri, mint(forger_keys, person_id)) as forged, pytest.raises(SwmsError) as caught:
        forged.identity.get_person({"person_id": person_id})
    assert caught.value.code == "TOKEN_INVALID"
