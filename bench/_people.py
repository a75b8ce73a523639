"""Generated people for the benches: names that identity's name rule accepts (Chinese characters
only; a digit, as in "测试12", is refused)."""
from __future__ import annotations

import random

from swms.idcard import check_character

SURNAMES, GIVEN = "李王张刘陈杨赵黄周吴徐孙马朱胡郭何林罗高", "明华静丽强军敏伟芳娜秀英建国平红玲燕霞"


def chinese_name(n: int) -> str:
    """A name for person ``n``; 8,000 distinct ones, then they repeat (the ID number tells people apart)."""
    return SURNAMES[n % len(SURNAMES)] + GIVEN[(n // 20) % len(GIVEN)] + GIVEN[(n // 400) % len(GIVEN)]


def generated_passers(count: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        first17 = f"110105{rng.randint(1960, 2000)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
        if first17 in seen:
            continue
        seen.add(first17)
        rows.append({"name": chinese_name(len(rows)), "id_number": first17 + check_character(first17),
                     "level": "社会工作师", "management_number": f"{len(rows):018d}", "exam_year": "2026",
                     "province": "11"})
    return rows
