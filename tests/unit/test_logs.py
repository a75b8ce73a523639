"""JSON log lines: one object per line, correlation id, no full resident ID numbers."""
import json
import logging

from swms import logs


def record(message: str, *args) -> logging.LogRecord:
    return logging.LogRecord("swms.test", logging.INFO, __file__, 1, message, args, None)


def test_id_numbers_are_masked_wherever_they_appear():
    line = json.loads(logs.JsonFormatter().format(record("sign-up for %s failed; other 11010519491231002x", "110105199003071239")))
    assert "110105199003071239" not in line["message"] and "11010519491231002x" not in line["message"]
    assert "110***********1239" in line["message"] and "110***********002x" in line["message"]


def test_longer_digit_runs_are_not_mangled():
    assert logs.mask_id_numbers("order 1101051990030712391") == "order 1101051990030712391"
    assert logs.mask_id_numbers("management number 202611000000123456") == "management number 202***********3456"


def test_correlation_id_is_attached():
    logs.set_correlation("gateway.call.1", "identity.login.2")
    try:
        line = json.loads(logs.JsonFormatter().format(record("hello")))
    finally:
        logs.set_correlation(None, None)
    assert (line["correlation_id"], line["call_id"], line["level"]) == ("gateway.call.1", "identity.login.2", "INFO")
