"""Every numeric setting of every service is checked (type and range) when the service starts, by
one helper (swms.config.Numbers, swms.settings.CheckedNumbers); a bad value stops the service
naming the environment variable that set it."""
from __future__ import annotations

import logging
import re

import pytest
from nameko.containers import ServiceContainer

from services.certificate import issuing
from services.certificate.settings import NUMBERS as CERTIFICATE
from services.identity import settings as identity_settings
from services.notification import domain as notification_domain
from services.notification.mailer import SmtpSettings
from services.profile import files as profile_files
from services.registration import proofs as registration_proofs
from services.review import domain as review_domain
from swms.config import REPO_ROOT, ConfigError, Number, Numbers, load_config, service_config_path
from swms.settings import CheckedNumbers
from tests.support import service_class

NUMBERS = {"identity": identity_settings.NUMBERS, "profile": profile_files.NUMBERS,
           "registration": registration_proofs.NUMBERS, "review": review_domain.NUMBERS,
           "certificate": CERTIFICATE, "notification": notification_domain.NUMBERS}
SETTING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*\$\{([A-Z0-9_]+):([^}]*)\}", re.M)


def numeric_settings(service: str) -> list[tuple[str, str, str]]:
    """(config key, environment variable, default) of every setting whose default is a number."""
    text = service_config_path(service).read_text(encoding="utf-8")
    return [(key, variable, default) for key, variable, default in SETTING.findall(text)
            if re.fullmatch(r"-?\d+(\.\d+)?", default.strip())]


def refusal(numbers: Numbers, config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        numbers.check(config)
    return str(caught.value)


@pytest.mark.parametrize("service", sorted(NUMBERS))
def test_every_numeric_setting_in_config_yaml_is_declared_with_the_same_default_and_refused_when_bad(service):
    numbers, found = NUMBERS[service], numeric_settings(service)
    assert len(found) >= 3
    config = load_config(service_config_path(service))
    assert numbers.check(config)     # the shipped defaults pass
    for key, variable, default in found:
        spec = numbers.specs.get(key)
        assert spec is not None, f"{service}: {key} is not declared"
        assert spec.default == type(spec.default)(float(default)), f"{service}: {key}"
        assert spec.low <= spec.default <= spec.high
        for bad in ("nonsense", spec.low - 1, spec.high + 1, True):
            message = refusal(numbers, {**config, key: bad})
            assert message.startswith(variable) and repr(bad) in message, (service, key, bad, message)


@pytest.mark.parametrize("service", sorted(NUMBERS))
def test_every_service_checks_its_numbers_before_anything_starts(service):
    checks = [value for value in vars(service_class(service)).values() if isinstance(value, CheckedNumbers)]
    assert [check.numbers for check in checks] == [NUMBERS[service]]


def test_a_bad_value_stops_the_container_at_creation_with_one_log_line_naming_the_variable(caplog):
    config = {**load_config(service_config_path("certificate")), "CERT_VALIDITY_YEARS": -1, "max_workers": 0}
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigError):
        ServiceContainer(service_class("certificate"), config)
    [line] = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert line.startswith("certificate refuses to start: ")
    assert "CERT_VALIDITY_YEARS must be a whole number from 1 to 10, not -1" in line
    assert "CERTIFICATE_MAX_WORKERS must be a whole number from 1 to 1000, not 0" in line   # all at once


def test_whole_numbers_and_numbers_as_yaml_or_text():
    numbers = Numbers("certificate", {"WHOLE": Number(3, 1, 10), "ANY": Number(2.5, 0.1, 60, whole=False)})
    assert [numbers.get({"WHOLE": value}, "WHOLE") for value in (4, "4", " 4 ", 4.0, None, "")] == [4, 4, 4, 4, 3, 3]
    assert [numbers.get({"ANY": value}, "ANY") for value in (1, "0.3", 60, "")] == [1, 0.3, 60, 2.5]
    for bad in ("4.5", 4.5, "4,5", "0x4", "nan", "inf", False, [4], 0, 11, "-1"):
        with pytest.raises(ConfigError):
            numbers.get({"WHOLE": bad}, "WHOLE")
    for bad in ("nan", "-inf", 0, "0.05", 61, True):
        with pytest.raises(ConfigError):
            numbers.get({"ANY": bad}, "ANY")


# ---- each service's settings, read through its numbers -------------------------------------------

def test_certificate_validity_below_one_year_is_refused():
    """CERT_VALIDITY_YEARS=-1 used to issue certificates that expired before they were issued."""
    for bad in (-1, 0, "abc", 2.5, 11):
        with pytest.raises(ConfigError, match=r"^CERT_VALIDITY_YEARS must be a whole number from 1 to 10"):
            issuing.Settings.from_config({"CERT_VALIDITY_YEARS": bad})
    settings = issuing.Settings.from_config({"CERT_VALIDITY_YEARS": "5", "CERT_ISSUE_LEASE_SECONDS": "2"})
    assert (settings.validity_years, settings.lease_seconds, settings.retry_ceiling_seconds) == (5, 2.0, 900.0)


def test_identity_refuses_a_password_minimum_below_eight_instead_of_raising_it(tmp_path):
    key = tmp_path / "hash.key"
    key.write_bytes(b"k" * 32)
    base = {"ID_HASH_KEY_FILE": str(key)}
    with pytest.raises(ConfigError, match="^PASSWORD_MIN_LENGTH must be a whole number from 8 to 128, not 7"):
        identity_settings.from_config({**base, "PASSWORD_MIN_LENGTH": 7})
    with pytest.raises(ConfigError, match="^LOGIN_LOCK_MINUTES"):
        identity_settings.from_config({**base, "LOGIN_LOCK_MINUTES": "0"})
    settings = identity_settings.from_config({**base, "LOGIN_LOCK_MINUTES": "10", "REFRESH_TOKEN_TTL_HOURS": "0.5"})
    assert settings.login_account.lock.total_seconds() == 600 and settings.refresh_ttl.total_seconds() == 1800


def test_profile_names_its_own_variable():
    with pytest.raises(ConfigError, match="^PROFILE_PHOTO_MAX_BYTES must be a whole number"):
        profile_files.Settings.from_config({"PHOTO_MAX_BYTES": "0"})
    with pytest.raises(ConfigError, match="^PROFILE_PHOTO_TOLERANCE_PERCENT must be a number from 0 to 50"):
        profile_files.Settings.from_config({"PHOTO_TOLERANCE_PERCENT": "-3"})
    assert profile_files.Settings.from_config({"PROOF_MAX_BYTES": 204800}).proof_max_bytes == 204800


def test_registration_proof_settings():
    with pytest.raises(ConfigError, match="^REGISTRATION_PROOF_ORPHAN_HOURS"):
        registration_proofs.NUMBERS.get({"PROOF_ORPHAN_HOURS": -1}, "PROOF_ORPHAN_HOURS")
    with pytest.raises(ConfigError, match="^REGISTRATION_PROOF_MAX_BYTES"):
        registration_proofs.NUMBERS.get({"PROOF_MAX_BYTES": "5MB"}, "PROOF_MAX_BYTES")


def test_review_rules_refuse_a_deadline_of_no_working_days():
    config = {"REVIEW_CHAINS_FILE": str(REPO_ROOT / "services/review/chains.yaml"),
              "REVIEW_CALENDAR_FILE": str(REPO_ROOT / "services/review/calendar.yaml")}
    with pytest.raises(ConfigError, match="^REVIEW_DEADLINE_WORKING_DAYS must be a whole number from 1 to 365"):
        review_domain.Rules.from_config({**config, "REVIEW_DEADLINE_WORKING_DAYS": 0})
    assert review_domain.Rules.from_config({**config, "REVIEW_NEAR_DUE_WORKING_DAYS": "3"}).near_due_working_days == 3


def test_notification_smtp_port_and_reminders():
    config = {"SMTP_HOST": "127.0.0.1", "MAIL_FROM": "x <no-reply@example.cn>"}
    with pytest.raises(ConfigError, match="^SMTP_PORT must be a whole number from 1 to 65535, not 70000"):
        SmtpSettings.from_config({**config, "SMTP_PORT": 70000})
    assert SmtpSettings.from_config({**config, "SMTP_PORT": "2525"}).port == 2525
    with pytest.raises(ConfigError, match="^REREGISTRATION_WINDOW_MONTHS"):
        notification_domain.NUMBERS.get({"REREGISTRATION_WINDOW_MONTHS": 0}, "REREGISTRATION_WINDOW_MONTHS")


def test_docs_give_every_range():
    text = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for service, numbers in NUMBERS.items():
        for key, spec in numbers.specs.items():
            variable = numbers.variable(key).replace(f"{service.upper()}_", "<SERVICE>_", 1) \
                if key in ("max_workers", "DB_POOL_SIZE") else numbers.variable(key)
            shown = "–".join(f"{end:g}" if isinstance(end, float) else str(end) for end in (spec.low, spec.high))
            assert f"`{variable}` {shown}" in text, (service, key)
