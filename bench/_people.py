"""Generated people for the benches: names that identity's name rule accepts (Chinese characters
only; a digit, as in "测试12", is refused)."""
from __future__ import annotations

SURNAMES, GIVEN = "李王张刘陈杨赵黄周吴徐孙马朱胡郭何林罗高", "明华静丽强军敏伟芳娜秀英建国平红玲燕霞"


def chinese_name(n: int) -> str:
    """A name for person ``n``; 8,000 distinct ones, then they repeat (the ID number tells people apart)."""
    return SURNAMES[n % len(SURNAMES)] + GIVEN[(n // 20) % len(GIVEN)] + GIVEN[(n // 400) % len(GIVEN)]
