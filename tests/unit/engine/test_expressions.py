"""The runbooks' expression language (bot/engine/expressions.py): templating over what a step can
see (params, partner, steps.<id>.outputs, execution) and the sandbox around it. Every refusal is an
ExpressionError with a message a runbook author can act on; nothing else ever escapes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.catalog import load_catalog
from bot.engine.executor import partner_scope
from bot.engine.expressions import (
    FUNCTIONS,
    MAX_EXPRESSION,
    ExpressionError,
    evaluate,
    expressions_in,
    references,
    render,
)


def _acme(drill: bool):
    acme = load_catalog().partners["partner-acme"]
    return acme.for_drill() if drill else acme


def scope(*, drill: bool = False) -> dict:
    """What the executor hands expressions mid-run (Executor.scope), with the demo partner."""
    return {
        "params": {"table": "orders", "window": 900, "mode": "on-demand", "write_units": 400, "dry": False},
        "partner": partner_scope(_acme(drill)),
        "steps": {
            "detect": {
                "outputs": {
                    "throttling": True,
                    "throttled_writes": 212,
                    "peak_write_ratio": 3.1,
                    "verdict": "throttled",
                    "top": [{"key": "C#2", "share": 0.61}, {"key": "C#7", "share": 0.12}],
                    "nothing": None,
                },
                "outcome": "succeeded",
            }
        },
        "execution": {
            "id": "rb-k3j7q2m4xa",
            "requested_by": "U0DEVONCALL",
            "drill": drill,
            "attempt": 1,
            "runbook": "throttle",
        },
    }


SCOPE = scope()
# simpleeval warns (and goes on) on statements; the test that they are refused is marked below.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:simpleeval")


class TookTooLong(BaseException):
    """Raised by the alarm below; a BaseException so that no `except Exception` can swallow it."""


@contextmanager
def at_most(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (a hang becomes a failure, not a stuck CI job).

    pytest-timeout may hold the same timer: what it had left is given back afterwards.
    """

    def stop(signum, frame):
        raise TookTooLong(f"still evaluating after {seconds}s")

    previous = signal.signal(signal.SIGALRM, stop)
    started = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:
            left = max(outer_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def refusal(expression: str) -> str:
    with at_most(5), pytest.raises(ExpressionError) as error:
        evaluate(expression, SCOPE)
    message = str(error.value)
    assert message.strip()
    return message


# -- templating ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ params.window }}", 900),
        ("{{ params.dry }}", False),
        ("{{ steps.detect.outputs.throttling }}", True),
        ("{{ steps.detect.outputs.peak_write_ratio }}", 3.1),
        ("{{ steps.detect.outputs.nothing }}", None),
        ("{{ steps.detect.outputs.top }}", [{"key": "C#2", "share": 0.61}, {"key": "C#7", "share": 0.12}]),
        ("{{ steps.detect.outputs.top[0] }}", {"key": "C#2", "share": 0.61}),
        ("{{ params.window // 60 }}", 15),
        ("{{ params.window / 60 }}", 15.0),
        ("{{ {'read': params.write_units, 'write': 0} }}", {"read": 400, "write": 0}),
        ("{{ [params.table, params.mode] }}", ["orders", "on-demand"]),
        ("  {{ params.window }}  ", 900),  # whitespace around one whole expression does not make it text
        ("{{params.window}}", 900),
    ],
)
def test_a_template_that_is_one_whole_expression_keeps_the_values_type(template, value):
    result = render(template, SCOPE)
    assert result == value and type(result) is type(value)


def test_params_partner_steps_and_execution_are_all_in_scope():
    assert render("{{ params.table }}", SCOPE) == "orders"
    assert render("{{ partner.tables[params.table].name }}", SCOPE) == "acme-orders"
    assert render("{{ partner.tables.orders.partition_key.name }}", SCOPE) == "pk"
    assert render("{{ partner.sla.resolution_minutes }}", SCOPE) == 120
    assert render("{{ steps.detect.outputs.top[0].key }}", SCOPE) == "C#2"
    assert render("{{ steps.detect.outcome }}", SCOPE) == "succeeded"
    assert render("{{ execution.id }}", SCOPE) == "rb-k3j7q2m4xa"


def test_in_a_drill_the_partners_table_names_point_at_the_drill_target():
    assert render("{{ partner.tables[params.table].name }}", scope(drill=True)) == "acme-orders-drill"


def test_a_template_holding_two_expressions_becomes_text_with_both_filled_in():
    assert render("{{ params.table }}/{{ params.window }}", SCOPE) == "orders/900"
    assert render("{{ params.table }}{{ params.table }}", SCOPE) == "ordersorders"
    assert (
        render("{{ steps.detect.outputs.throttled_writes }} writes throttled on {{ params.table }}", SCOPE)
        == "212 writes throttled on orders"
    )


def test_in_text_booleans_read_as_true_false_and_null_as_nothing():
    assert (
        render("dry={{ params.dry }} hot={{ steps.detect.outputs.throttling }}", SCOPE)
        == "dry=false hot=true"
    )
    assert render("[{{ steps.detect.outputs.nothing }}]", SCOPE) == "[]"
    assert render("ratio {{ steps.detect.outputs.peak_write_ratio }}", SCOPE) == "ratio 3.1"


def test_text_around_a_single_expression_makes_the_result_text():
    assert render("{{ params.window }}s", SCOPE) == "900s"
    assert render("window {{ params.window }}", SCOPE) == "window 900"


def test_nested_inputs_are_rendered_all_the_way_down():
    inputs = {
        "table": "{{ partner.tables[params.table].name }}",
        "window_seconds": "{{ params.window }}",
        "tags": ["{{ params.mode }}", "fixed", 3, None, ("{{ params.dry }}",)],
        "nested": {"deeper": {"units": "{{ params.write_units * 2 }}"}},
    }
    assert render(inputs, SCOPE) == {
        "table": "acme-orders",
        "window_seconds": 900,
        "tags": ["on-demand", "fixed", 3, None, [False]],
        "nested": {"deeper": {"units": 800}},
    }


@pytest.mark.parametrize(
    "value", ["plain text", "", "a } b { c", "x }}", "{ not a template }", 7, 2.5, True, None]
)
def test_values_without_a_template_come_back_unchanged(value):
    assert render(value, SCOPE) == value


def test_an_opening_brace_pair_without_a_closing_one_is_left_as_text():
    assert render("a {{ b", SCOPE) == "a {{ b"


def test_conditions_short_circuit_so_a_step_that_did_not_run_can_be_tested_for():
    assert render("{{ 'replay' not in steps or steps.replay.outputs.failed == 0 }}", SCOPE) is True
    assert render("{{ false and steps.replay.outputs.failed }}", SCOPE) is False
    assert render("{{ steps.detect.outputs.throttled_writes > 0 and not params.dry }}", SCOPE) is True


def test_the_whitelisted_functions_work():
    assert evaluate("len(steps.detect.outputs.top)", SCOPE) == 2
    assert evaluate("max(1, params.window / 60)", SCOPE) == 15
    assert evaluate("min(params.write_units, 100)", SCOPE) == 100
    assert evaluate("round(steps.detect.outputs.peak_write_ratio)", SCOPE) == 3
    assert evaluate("int('42') + float('0.5')", SCOPE) == 42.5
    assert evaluate("str(params.window) + 's'", SCOPE) == "900s"
    assert evaluate("abs(-3)", SCOPE) == 3
    assert evaluate("sum([t.share for t in steps.detect.outputs.top])", SCOPE) == pytest.approx(0.73)
    assert evaluate("any([false, true]) and all([true]) and bool(1)", SCOPE) is True


@pytest.mark.parametrize(
    ("word", "value"), [("true", True), ("True", True), ("false", False), ("null", None)]
)
def test_yaml_and_python_spellings_of_constants_both_work(word, value):
    assert evaluate(word, SCOPE) is value


def test_expressions_in_finds_every_expression_of_a_nested_input():
    found = expressions_in({"a": "{{ x }} and {{ y }}", "b": ["{{ z }}", 3], "c": "none"})
    assert [e.strip() for e in found] == ["x", "y", "z"]


def test_references_name_the_paths_an_expression_reads_and_not_the_functions_it_calls():
    refs = references("len(steps.detect.outputs.top) > 0 and partner.tables[params.table].name != ''")
    assert ("steps", "detect", "outputs", "top") in refs and ("params", "table") in refs
    assert ("partner", "tables") in refs and not any(r[0] == "len" for r in refs)


# -- readable errors for mistakes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        (
            "params.nope",
            "`params.nope` does not exist; available here: dry, mode, table, window, write_units",
        ),
        ("steps.mitigate.outputs.x", "does not exist; available here: detect"),
        ("steps.detect.outputs.top[5]", "no entry 5; available: 2 items"),
        ("partner.tables['nope']", "no entry 'nope'; available: orders"),
        (
            "nothing_here",
            "`nothing_here` is not defined; expressions can use execution, params, partner, steps",
        ),
        ("params.table.upper()", "dotted access works on mappings only, not on str"),
        ("steps.detect.outputs.nothing.x", "dotted access works on mappings only, not on NoneType"),
        ("1 +", "is not a valid expression"),
        ("params.window / 0", "ZeroDivisionError"),
        ("int('x')", "ValueError: invalid literal for int()"),
        ("'a' + 1", "TypeError"),
        ("min([])", "ValueError"),
        ("int(1e308 * 10)", "OverflowError"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1" * (MAX_EXPRESSION + 1), f"at most {MAX_EXPRESSION}"),
    ],
)
def test_a_mistake_is_an_expression_error_that_names_the_problem_and_what_is_available(expression, says):
    assert says in refusal(expression)


def test_an_empty_template_is_an_expression_error():
    for template in ("{{ }}", "{{}}", "x {{ }} y"):
        with pytest.raises(ExpressionError, match="empty expression"):
            render(template, SCOPE)


def test_an_error_inside_a_text_template_is_an_expression_error():
    with pytest.raises(ExpressionError, match="does not exist"):
        render("table {{ params.nope }}", SCOPE)


def test_an_expression_of_exactly_the_maximum_length_is_evaluated():
    expression = "[" + "1," * ((MAX_EXPRESSION - 2) // 2) + "]"
    assert len(expression) == MAX_EXPRESSION
    assert evaluate(expression, SCOPE) == [1] * ((MAX_EXPRESSION - 2) // 2)


# -- the sandbox --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "params.__class__",
        "params.__dict__",
        "steps.__len__",
        "execution._private",
        "().__class__.__bases__[0].__subclasses__()",
        "''.__class__.__mro__[1].__subclasses__()",
        "params.table.__len__()",
        "steps.detect.outputs.top[0].__class__",
        "[].__class__.__base__",
        "(1).__class__",
    ],
)
def test_no_attribute_starting_with_an_underscore_is_reachable(expression):
    assert "names starting with _ are not available" in refusal(expression)


@pytest.mark.parametrize("expression", ["len.__self__", "str.__mro__", "max.__module__"])
def test_functions_are_not_values_so_their_internals_are_not_reachable(expression):
    message = refusal(expression)
    assert "names starting with _" in message or "is not defined" in message


def test_a_dunder_as_a_mapping_key_is_only_a_missing_key_never_an_attribute():
    assert "no entry '__class__'" in refusal("params['__class__']")
    assert "no entry '__globals__'" in refusal("partner['__globals__']")


@pytest.mark.parametrize(
    "expression",
    ["params.table.upper()", "'{}'.format(1)", "[].append(1)", "params.get('table')", "(1).real"],
)
def test_no_method_of_any_value_is_reachable(expression):
    message = refusal(expression)
    assert "dotted access works on mappings only" in message or "does not exist" in message


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("import os", "'import' is not allowed"),
        ("__import__('os')", "'__import__' not defined"),
        ("__import__('os').system('true')", "not defined"),
    ],
)
def test_nothing_can_be_imported(expression, says):
    assert says in refusal(expression)


@pytest.mark.parametrize(
    "function",
    [
        "open", "eval", "exec", "compile", "getattr", "setattr", "type", "globals", "vars", "dir",
        "range", "print", "input", "help", "breakpoint", "id", "hash", "iter", "next", "map",
    ],
)  # fmt: skip
def test_a_function_outside_the_whitelist_cannot_be_called_and_is_named(function):
    assert function not in FUNCTIONS
    assert f"Function '{function}' not defined" in refusal(f"{function}('x')")


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("lambda: 1", "Lambda"),
        ("(lambda: 1)()", "Lambda"),
        ("del params", "Delete is not available"),
        ("yield 1", "Yield is not available"),
    ],
)
def test_no_function_definitions_or_statements_are_evaluated(expression, says):
    assert says in refusal(expression)


@pytest.mark.parametrize("expression", ["params.mode = 'provisioned'", "1; 2", "1\n2"])
def test_an_assignment_or_a_second_statement_is_refused(expression):
    refusal(expression)


# Denial of service: every size is bounded and no expression runs long.


@pytest.mark.parametrize(
    "expression",
    [
        "'x' * 10**9",
        "'ab' * 10**6",
        "[0] * 10**9",
        "(1,) * 10**9",
        "steps.detect.outputs.top * 10**8",
        "'a' * 99999 + 'a' * 99999",
        "9 ** 9 ** 9",
        "10 ** 10 ** 10",
        "2 ** 10**8",
        "1 << 10**10",
        "1 << 100000",
        "2.0 ** 10000",
        "str(10 ** 100000)",
        "int('9' * 5000)",
        "f'{1:>99999999}'",
        "-" * 900 + "1",  # deep nesting: recursion, refused
    ],
)
def test_huge_results_are_refused_quickly_with_an_expression_error(expression):
    started = time.monotonic()
    refusal(expression)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("expression", ["'%0200000d' % 1", "'%.200000f' % 1.0", "'%200000s' % params.table"])
def test_printf_style_formatting_cannot_build_a_string_past_the_size_bound(expression):
    refusal(expression)


@pytest.mark.parametrize("expression", ["[[1]*100000]*100000", "sum([[1]*100000]*1000, [])"])
def test_nested_repetition_is_refused_quickly(expression):
    with at_most(2), pytest.raises(ExpressionError):
        evaluate(expression, SCOPE)


def test_a_number_too_large_to_print_in_a_text_template_is_an_expression_error():
    with pytest.raises(ExpressionError):
        render("{{ 10 ** 5000 }} items", SCOPE)


@pytest.mark.parametrize(
    "expression",
    [
        "params.nope",
        "nothing_here",
        "1 +",
        "params.__class__",
        "open('x')",
        "'x' * 10**9",
        "import os",
        pytest.param(
            "1 @ 2",
        ),
        pytest.param(
            "{}['a']",
        ),
    ],
)
def test_refusals_read_as_sentences_without_python_internals(expression):
    message = refusal(expression)
    assert "object at 0x" not in message and "<ast." not in message
    assert not message.rstrip().endswith(":")


# -- properties ---------------------------------------------------------------------------------


def evaluates_or_refuses(text: str) -> None:
    try:
        with at_most(5):
            evaluate(text, SCOPE)
    except ExpressionError as error:
        assert str(error).strip()


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_evaluates_or_is_refused_with_an_expression_error(text):
    evaluates_or_refuses(text)


TOKENS = [
    *["params", "partner", "steps", "execution", "detect", "outputs", "top", "table", "tables", "window"],
    *["throttling", "name", "__class__", "_x", "__import__", "len", "max", "sum", "str", "int", "open"],
    *["true", "false", "null", "None", "not", "and", "or", "in", "if", "else", "for", "lambda", "import"],
    *[".", ",", ":", "(", ")", "[", "]", "{", "}", "+", "-", "*", "**", "/", "//", "%", "<<", "==", "<"],
    *["=", ";", "'a'", "'%5s'", '"b"', "0", "1", "2", "7", "60", "1.5", "1e308", " ", "\n", "{{", "}}"],
]
token_text = st.lists(st.sampled_from(TOKENS), max_size=16).map(" ".join)


@settings(max_examples=1000, deadline=None)
@given(token_text)
def test_any_mix_of_the_languages_words_evaluates_or_is_refused_with_an_expression_error(text):
    evaluates_or_refuses(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=16).map("".join))
def test_any_template_renders_or_is_refused_with_an_expression_error(text):
    try:
        with at_most(5):
            result = render(text, SCOPE)
    except ExpressionError as error:
        assert str(error).strip()
        return
    if "{{" not in text:
        assert result == text


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), inner, max_size=4),
    max_leaves=12,
))  # fmt: skip
def test_a_value_put_in_scope_comes_back_unchanged_through_a_whole_expression_template(value):
    assert render("{{ params.value }}", {"params": {"value": value}}) == value
