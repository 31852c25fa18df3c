"""FilterCriteria as Lambda applies them (developer guide: "Control which events Lambda sends to
your function" and "Using event filtering with a DynamoDB event source"), so a pattern that would
never match on AWS never matches locally either."""

from __future__ import annotations

from typing import Any

import pytest

from bot.local.filters import matches, matches_any


def record(**image: dict[str, Any]) -> dict[str, Any]:
    """A stream record whose NewImage holds `image` (DynamoDB JSON)."""
    return {"eventName": "INSERT", "dynamodb": {"NewImage": image}}


ORGANIZATIONS = record(
    UserID={"S": "12345"},
    Organizations={"L": [{"S": "Sales"}, {"S": "Marketing"}]},
)


def test_exists_never_matches_an_attribute_only_its_leaf():
    # The guide's own example: "Organizations" is an intermediate node, so this never matches.
    assert not matches({"dynamodb": {"NewImage": {"Organizations": [{"exists": True}]}}}, ORGANIZATIONS)
    assert matches({"dynamodb": {"NewImage": {"UserID": {"S": [{"exists": True}]}}}}, ORGANIZATIONS)


def test_exists_false_matches_an_attribute_the_image_lacks():
    pattern = {"dynamodb": {"NewImage": {"error": {"S": [{"exists": False}]}}}}
    assert matches(pattern, record(status={"S": "RUNNING"}))
    assert not matches(pattern, record(status={"S": "FAILED"}, error={"S": "Throttled"}))
    assert not matches({"dynamodb": {"NewImage": {"error": {"S": ["x"]}}}}, record(status={"S": "RUNNING"}))


@pytest.mark.parametrize(
    "rule",
    [["RUNNING"], [{"anything-but": ["FAILED"]}], [{"prefix": "R"}], [{"equals-ignore-case": "running"}]],
)
def test_a_rule_on_an_attribute_instead_of_its_typed_value_never_matches(rule):
    status = record(status={"S": "RUNNING"})
    assert not matches({"dynamodb": {"NewImage": {"status": rule}}}, status)
    assert matches({"dynamodb": {"NewImage": {"status": {"S": rule}}}}, status)


def test_numeric_rules_never_match_dynamodb_numbers_which_are_strings():
    attempts = record(attempt={"N": "5"})
    assert not matches({"dynamodb": {"NewImage": {"attempt": {"N": [{"numeric": [">", 1]}]}}}}, attempts)
    assert matches({"dynamodb": {"NewImage": {"attempt": {"N": ["5"]}}}}, attempts)


def test_numeric_rules_match_json_numbers():
    event = {"detail": {"count": 7}}
    assert matches({"detail": {"count": [{"numeric": [">", 5, "<=", 7]}]}}, event)
    assert not matches({"detail": {"count": [{"numeric": ["<", 5]}]}}, event)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (300, 300, True),
        (300, 300.0, False),
        (1, True, False),
        (True, True, True),
        ("1", 1, False),
        (None, None, True),
    ],
)
def test_values_match_exactly_numbers_by_their_representation(rule, value, expected):
    assert matches({"detail": {"value": [rule]}}, {"detail": {"value": value}}) is expected


def test_anything_but_compares_exactly_too():
    assert matches({"detail": {"value": [{"anything-but": [1]}]}}, {"detail": {"value": True}})
    assert not matches({"detail": {"value": [{"anything-but": [True]}]}}, {"detail": {"value": True}})


def test_no_patterns_let_every_record_through_and_any_matching_pattern_is_enough():
    status = record(status={"S": "RUNNING"})
    assert matches_any([], status)
    assert matches_any([{"eventName": ["MODIFY"]}, {"eventName": ["INSERT"]}], status)
    assert not matches_any([{"eventName": ["MODIFY"]}, {"eventName": ["REMOVE"]}], status)
