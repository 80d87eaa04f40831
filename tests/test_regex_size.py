"""The RE2 program-size shortcut: a pattern it lets through without compiling is small enough."""

from __future__ import annotations

import random

import pytest
import re2

from translators.regex import over_program_size, program_size

TOKENS = [
    "a", "k", "s", ".", "[^/]", "[a-z]", r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", "(?i)", "(?s)",
    "*", "+", "?", "|", "(", ")", "^", "$", "[^a]", r"\b", "(?:", "[[:^alpha:]]",
    r"[^\x00-\x7f]", r"\x{10FFFF}", ".*?", r"[\x80-\xff]", "(?U)", "[^ ]", r"[^\n]",
]  # fmt: skip


@pytest.mark.parametrize("limit", [60, 120, 300, 1000])
def test_patterns_let_through_without_compiling_are_within_the_limit(limit: int) -> None:
    rnd = random.Random(limit)
    checked = 0
    for _ in range(20_000):
        pattern = "".join(rnd.choice(TOKENS) for _ in range(rnd.randrange(1, 30)))
        try:
            size = program_size(pattern)
        except re2.error:
            continue
        verdict = over_program_size(pattern, limit)
        if verdict is None:
            assert size <= limit, (pattern, size, limit)
            checked += 1
        else:
            assert verdict == size > limit
    assert checked > 500  # the shortcut was exercised, not skipped


def test_counted_repetition_and_unicode_classes_are_always_compiled() -> None:
    assert over_program_size(r"\pL", 1000) == program_size(r"\pL")
    assert over_program_size("a{1000}", 100) == program_size("a{1000}")
    assert over_program_size("a{2}", 100) is None
