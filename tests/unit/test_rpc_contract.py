"""The RPC boundary: pydantic failures become one SwmsError with Chinese, per-field details."""
import pytest

from swms import errors
from swms.contracts.identity import SignUpRequest
from swms.contracts.profile import BasicInfoRequest
from swms.contracts.review import DecideRequest, QueueRequest
from swms.rpc import contract, parse

GOOD = {"name": "李明华", "id_number": "110105199003071239", "email": "li@example.cn", "password": "Strong-pass-1"}


def test_every_bad_field_is_reported_by_name():
    with pytest.raises(errors.SwmsError) as caught:
        parse(SignUpRequest, {"name": "", "id_number": "360426199101010072", "email": "x", "password": "1"})
    fields = [d["field"] for d in caught.value.details]
    assert fields == ["name", "id_number", "email", "password"]
    assert caught.value.code == "VALIDATION_FAILED" and caught.value.field == "name"
    assert caught.value.message == "姓名长度不足"


def test_id_number_failures_carry_their_own_code():
    with pytest.raises(errors.SwmsError) as caught:
        parse(SignUpRequest, dict(GOOD, id_number="11010519900307123"))
    assert caught.value.code == "ID_NUMBER_INVALID"
    assert caught.value.message == "身份证号：请输入正确的身份证号"


@pytest.mark.parametrize("payload, field", [
    (dict(GOOD, unknown="x"), "unknown"),
    (dict(GOOD, name="<script>"), "name"),
    (dict(GOOD, name="李" * 51), "name"),
    (dict(GOOD, name=123), "name"),
    (dict(GOOD, email="a" * 250 + "@x.cn"), "email"),
    ({k: v for k, v in GOOD.items() if k != "password"}, "password"),
])
def test_bad_values(payload, field):
    with pytest.raises(errors.SwmsError) as caught:
        parse(SignUpRequest, payload)
    assert caught.value.field == field


@pytest.mark.parametrize("payload", [["a", "list"], "text", 42])
def test_payload_must_be_an_object(payload):
    with pytest.raises(errors.SwmsError) as caught:
        parse(SignUpRequest, payload)
    assert caught.value.field == "payload"


def test_model_rules_read_in_chinese():
    with pytest.raises(errors.SwmsError) as caught:
        parse(DecideRequest, {"item_id": "00000000-0000-4000-8000-000000000000", "decision": "reject"})
    assert "不通过时须填写理由" in caught.value.message
    form = {"ethnicity": "汉族", "political_status": "群众", "major": "社会工作",
            "education": "本科", "mobile": "13800138000", "address": "北京",
            "region_code": "110105", "unit_category": "企业", "unit_name": "某公司", "position": "职员",
            "truth_commitment": False}
    with pytest.raises(errors.SwmsError) as caught:
        parse(BasicInfoRequest, form)
    assert "《社会工作者职业道德指引》" in caught.value.message
    assert (caught.value.code, caught.value.field) == ("COMMITMENT_REQUIRED", "truth_commitment")


@pytest.mark.parametrize("page_size", [0, 201, 1_000_000, "abc"])
def test_page_size_is_bounded(page_size):
    with pytest.raises(errors.SwmsError) as caught:
        parse(QueueRequest, {"page_size": page_size})
    assert caught.value.field == "page_size"


class Echo:
    @contract(SignUpRequest)
    def sign_up(self, request):
        return request

    @contract(None)
    def ping(self):
        return "pong"


def test_contract_accepts_one_object_or_keywords_not_both():
    assert Echo().sign_up(GOOD)["email"] == "li@example.cn"
    assert Echo().sign_up(**GOOD)["name"] == "李明华"
    with pytest.raises(errors.SwmsError):
        Echo().sign_up(GOOD, name="x")


def test_a_method_without_arguments_takes_an_empty_object_or_nothing():
    """docs/contracts.md: every method takes one JSON object; for these it is {}."""
    assert Echo().ping() == Echo().ping(None) == Echo().ping({}) == "pong"
    for payload, fields in (({"x": 1}, {}), (None, {"x": 1}), ([], {})):
        with pytest.raises(errors.SwmsError) as caught:
            Echo().ping(payload, **fields)
        assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "payload")


def test_errors_survive_nameko_serialisation():
    from nameko.exceptions import deserialize, serialize

    original = errors.SwmsError("NAME_MISMATCH", "姓名与身份证号不匹配", "name")
    wire = serialize(original)
    assert wire["exc_args"] == ["NAME_MISMATCH", "姓名与身份证号不匹配", "name", []]
    again = deserialize(wire)
    assert isinstance(again, errors.SwmsError) and again.to_dict() == original.to_dict()


def test_an_error_without_a_field_stays_without_one_over_the_wire():
    from nameko.exceptions import deserialize, serialize

    again = deserialize(serialize(errors.forbidden()))
    assert again.field is None and again.code == "FORBIDDEN"
