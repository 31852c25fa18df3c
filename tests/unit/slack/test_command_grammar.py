"""The `/runbook` grammar: every command of CONTRACT §3, and every bad input answered with what is valid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.exceptions import CommandError
from bot.slack import grammar
from bot.slack.grammar import (
    Cancel,
    Drill,
    Errors,
    Help,
    ListCommand,
    StartForm,
    StartRun,
    Status,
    Timeline,
    parse,
)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("throttle partner-acme", StartRun("throttle", "partner-acme")),
        ("  throttle   partner-acme  ", StartRun("throttle", "partner-acme")),
        ("throttle partner-acme window=30m", StartRun("throttle", "partner-acme", {"window": "30m"})),
        ('replay partner-acme note="two words"', StartRun("replay", "partner-acme", {"note": "two words"})),
        ("replay partner-acme note='it''s'", StartRun("replay", "partner-acme", {"note": "its"})),
        ('replay partner-acme note="say \\"hi\\""', StartRun("replay", "partner-acme", {"note": 'say "hi"'})),
        (
            "replay partner-acme note=\u201cSlack quotes\u201d",
            StartRun("replay", "partner-acme", {"note": "Slack quotes"}),
        ),
        (
            "replay partner-acme note=\u2018single\u2019",
            StartRun("replay", "partner-acme", {"note": "single"}),
        ),
        ("replay partner-acme note=ünïcødé→", StartRun("replay", "partner-acme", {"note": "ünïcødé→"})),
        ("throttle\u00a0partner-acme", StartRun("throttle", "partner-acme")),
        ("drill throttle partner-acme", Drill("throttle", "partner-acme")),
        (
            "drill throttle partner-acme faults=throttle=0.3,timeout=0.05 for=2m",
            Drill("throttle", "partner-acme", {"faults": "throttle=0.3,timeout=0.05", "for": "2m"}),
        ),
        ("list", ListCommand()),
        ("LIST", ListCommand()),
        ("help", Help()),
        ("", StartForm()),
        ("   ", StartForm()),
        ("start", StartForm()),
        ("help throttle", Help("throttle")),
        ("status rb-abcdefghij", Status("rb-abcdefghij")),
        ("status RB-ABCDEFGHIJ", Status("rb-abcdefghij")),
        ("timeline rb-abcdefghij", Timeline("rb-abcdefghij")),
        ("cancel rb-abcdefghij", Cancel("rb-abcdefghij")),
        ("errors", Errors()),
        ("errors ProvisionedThroughputExceededException", Errors("ProvisionedThroughputExceededException")),
    ],
)
def test_every_command_of_the_contract_parses(text, command):
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("throttle", "name a runbook and a partner"),
        ("drill throttle", "/runbook drill &lt;runbook&gt; &lt;partner&gt;"),
        ("window=5m throttle partner-acme", "name a runbook and a partner"),
        ("throttle partner-acme extra", "only key=value parameters"),
        ("Throttle! partner-acme", "names are lowercase letters, digits and dashes"),
        ("throttle partner-acme Window=5m", "keys are lowercase letters"),
        ("throttle partner-acme window=", "has no value"),
        ("throttle partner-acme window=1m window=2m", "given twice"),
        ('throttle partner-acme note="unterminated', "quote is never closed"),
        ("throttle partner-acme note=" + "x" * 257, "at most 256"),
        ("throttle partner-acme " + " ".join(f"k{i}=v" for i in range(21)), "at most 20"),
        ("x" * 1001, "at most 1000"),
        ("throttle partner-acme note=a\u0007b", "control character (U+0007)"),
        ("throttle partner-acme note=a\u200bb", "control character (U+200B)"),
        ("status", "takes one execution id"),
        ("status rb-1", "not an execution id"),
        ("status rb-abcdefghij rb-abcdefghij", "takes one execution id"),
        ("list everything", "takes at most 0 argument"),
        ("help throttle more", "takes at most 1 argument"),
        ("errors not-a-code!", "not an error code"),
    ],
)
def test_a_bad_command_says_what_is_wrong_and_what_is_valid(text, says):
    with pytest.raises(CommandError) as error:
        parse(text)
    assert says in str(error.value)


def test_a_long_bad_word_is_shortened_in_the_answer():
    with pytest.raises(CommandError) as error:
        parse("throttle partner-acme " + "Y" * 200)
    assert "..." in str(error.value) and "Y" * 41 not in str(error.value)


def test_execution_ids_are_stable_for_a_redelivered_request_and_well_formed():
    a = grammar.new_execution_id("T1:trigger-1:U1")
    assert a == grammar.new_execution_id("T1:trigger-1:U1") != grammar.new_execution_id("T1:trigger-2:U1")
    assert grammar.EXECUTION_ID.fullmatch(a)
    assert parse(f"status {a}") == Status(a)


VOCABULARY = st.sampled_from(
    [
        "throttle",
        "partner-acme",
        "drill",
        "list",
        "help",
        "status",
        "timeline",
        "cancel",
        "errors",
        "rb-abcdefghij",
        "window=5m",
        "k=v",
        "=",
        '"',
        "'",
        "\u201c",
        "\u201d",
        "\\",
        " ",
        "\t",
        "\n",
        'note="a b"',
        "é",
        "🙂",
        "\u0000",
        "\u200b",
        "<@U123|bob>",
        "&amp;",
        "x" * 300,
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=1200))
def test_no_text_makes_the_parser_raise_anything_but_a_command_error(text):
    try:
        parse(text)
    except CommandError as error:
        assert str(error).strip()


@settings(max_examples=400, deadline=None)
@given(st.lists(VOCABULARY, max_size=12).map(" ".join))
def test_no_mix_of_the_grammars_words_raises_anything_but_a_command_error(text):
    try:
        command = parse(text)
    except CommandError as error:
        assert str(error).strip()
        return
    if isinstance(command, StartRun | Drill):
        assert grammar.NAME.fullmatch(command.runbook) and grammar.NAME.fullmatch(command.partner)
        assert all(grammar.KEY.fullmatch(k) and v for k, v in command.params.items())


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(grammar.KEY, fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=40),
        max_size=5,
    )
)
def test_quoted_parameter_values_come_back_as_written(params):
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    values = {k: v.replace("\u00a0", " ") for k, v in params.items()}
    values = {k: "".join(grammar._QUOTES.get(c, c) for c in v) for k, v in values.items()}
    text = "throttle partner-acme " + " ".join(f"{k}={quoted(v)}" for k, v in values.items())
    assert parse(text) == StartRun("throttle", "partner-acme", values)
