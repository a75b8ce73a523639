"""Password hashing (argon2id) and the strength rule every new password must pass.

The rule (error ``PASSWORD_TOO_WEAK``, field named): at least ``PASSWORD_MIN_LENGTH`` characters
(default 10); at least three of lower-case letters, upper-case letters, digits, other characters;
at least five different characters; not built on a well-known weak word; not containing the
person's ID number or birth date. (The name part of the email address is not refused: the demo's
officer passwords, e.g. County-officer-1 for county@…, must pass.)
"""
from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from swms import errors

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 0.18 s per hash on
# the 2-core hosts measured here, where argon2-cffi's default (64 MiB, t=3, p=4) took 0.55 s and
# would let a handful of login attempts occupy a replica. Hashes made with other parameters still
# verify, and are re-hashed with these at the next successful login.
hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Compared against when no account matches, so a miss costs the same time as a wrong password.
DUMMY_HASH = hasher.hash("not-a-real-password")

_WEAK_WORDS = frozenset("""
password passwd passw pass word admin administrator root user guest test welcome login letmein iloveyou
qwerty qwertyuiop qwertyu asdf asdfgh asdfghjkl zxcv zxcvbn zxcvbnm qaz qazwsx qazwsxedc wsx
abc abcd abcde abcdef abcdefg abcdefgh china beijing woaini aiwoni wangyi baidu taobao
swms shegong socialwork changeme secret dragon monkey master sunshine
""".split())


def verify(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def problem(password: str, min_length: int, *, id_number: str | None = None,
            email: str | None = None) -> str | None:   # email: kept for callers; not a rule today
    """The Chinese reason ``password`` is too weak, or None."""
    if len(password) < min_length:
        return f"密码至少 {min_length} 位"
    classes = sum(bool(re.search(pattern, password)) for pattern in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z\d]"))
    if classes < 3:
        return "密码须包含大写字母、小写字母、数字、符号中的至少三类"
    if len(set(password)) < 5:
        return "密码过于简单"
    if re.sub(r"[^a-z]", "", password.lower()) in _WEAK_WORDS:
        return "密码过于常见，请换一个"
    upper = password.upper()
    if id_number and (id_number.upper() in upper or id_number[6:14] in password or id_number[-6:] in upper):
        return "密码不能包含身份证号或出生日期"
    return None


def check(password: str, min_length: int, field: str = "password", **context) -> None:
    reason = problem(password, min_length, **context)
    if reason:
        raise errors.SwmsError(errors.PASSWORD_TOO_WEAK, reason, field,
                               [{"field": field, "code": errors.PASSWORD_TOO_WEAK, "message": reason}])
