"""The backtracking analyser refuses the regexes that could hang an evaluation."""

# CONVENTIONS.md asks for `expected == actual` asserts
import re
import re._parser as sre_parse  # type: ignore[import-not-found]  # private, untyped; what regex_problem parses with

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.flags._regex import _forced_end, regex_problem


@pytest.mark.parametrize(
    "pattern",
    [
        "(a+)+",
        "(a*)*b",
        "(a|aa)+",
        r"(\w+\s?)*$",
        "(?:x+y?)+",
        r"(a)\1",
        "(?P<n>a)(?P=n)",
        "(a)?(?(1)b|c)",
        r".*a.*a.*a.*b",
        r"^\w*\w*\w*\w*x",
        r".*foo.*bar.*baz",
        r"(?=.*a.*b.*c)",
        r"^[a-z.]+\.[a-z.]+\.[a-z.]+\.[a-z.]+$",
        r".*.*[a-z]+@.*.*!",
        r".*.*[a-z]++",
        r"(?>.*.*.*x)",
        r"(?i)^[a-z]+-[a-z]+-[a-z]+$",
        r"^[^\d]+1[^\d]+1[^\d]+1",
    ],
)
def test_unsafe_regexes_refused(pattern):
    """Nested quantifiers, alternation, backreferences and polynomial backtracking are refused."""
    assert regex_problem(pattern) is not None


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[a-z]+@example\.com$",
        "(ab)+",
        "(foo|bar)",
        r"^v\d+\.\d+",
        "a{2,5}",
        "(?=a)a+",
        "(?>a)+",
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
        r".*.*x",
        r"[a-z]++@[a-z]++\.[a-z]++",
        r"(?>.*a)(?>.*b).*c",
        r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$",
        r"[a-z]+@[a-z]+\.[a-z]+",
        r"^user-\d+-\d+-\d+$",
        r"^[^-]+-[^-]+-[^-]+-[^-]+$",
        r"^\w+-\w+-\w+-\w+$",
        r"^\W+a\W+a\W+a\W+a",
    ],
)
def test_safe_regexes_accepted(pattern):
    """Ordinary patterns are accepted."""
    assert regex_problem(pattern) is None


@settings(max_examples=300)
@given(
    st.sampled_from(
        [r"[a-z]", r"\d", r"\w", r"[^-]", r"[^@.]", r"\W", "a", "[a-z0-9._%+-]"]
    ),
    st.sampled_from(["-", "@", r"\.", "[.@]", "a", "[0-9]", "_"]),
    st.text(alphabet="ab1_-.@é٣ ", max_size=12),
)
def test_forced_end_has_at_most_one_end(body, separator, text):
    """When the rule pins a quantifier's end, at most one repeat count is followed by the separator.

    This is the whole soundness argument for not multiplying by that quantifier's
    reach, checked against the engine itself rather than by timing it.
    """
    tree = sre_parse.parse(body + separator)
    if not _forced_end(sre_parse, [tree[0]], tree[1]):
        return
    ends = [
        k
        for k in range(len(text))
        if re.fullmatch(f"(?:{body}){{{k}}}{separator}", text[: k + 1])
    ]
    assert len(ends) <= 1
