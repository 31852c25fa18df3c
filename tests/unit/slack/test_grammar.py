"""The `/runbook` grammar (bot/slack/grammar.py), exhaustively: CONTRACT §3's subcommands, quoting,
key=value parameters, limits, unicode and Slack's own text transformations, and properties over any
text. Every bad command is a CommandError whose message says what was wrong and what is valid.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
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
    tokenize,
)

EXECUTION = "rb-k3j7q2m4xa"
# What a message must contain to tell the person what is valid or what to do instead.
GUIDANCE = re.compile(
    r"e\.g\.|at most|look like|only key=value|write \w+=&lt;value&gt;|give it once|remove it|close it"
)


def refusal(text: str) -> str:
    with pytest.raises(CommandError) as error:
        parse(text)
    message = str(error.value)
    assert message.strip()
    return message


# -- every subcommand of CONTRACT §3 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("throttle partner-acme", StartRun("throttle", "partner-acme")),
        ("incomplete-results partner-globex", StartRun("incomplete-results", "partner-globex")),
        ("throttle partner-acme window=30m", StartRun("throttle", "partner-acme", {"window": "30m"})),
        (
            "throttle partner-acme window=30m mode=on-demand write_units=400",
            StartRun(
                "throttle", "partner-acme", {"window": "30m", "mode": "on-demand", "write_units": "400"}
            ),
        ),
        ("list", ListCommand()),
        ("help", Help()),
        ("help throttle", Help("throttle")),
        (f"status {EXECUTION}", Status(EXECUTION)),
        (f"timeline {EXECUTION}", Timeline(EXECUTION)),
        (f"cancel {EXECUTION}", Cancel(EXECUTION)),
        ("errors", Errors()),
        ("errors ConditionalCheckFailedException", Errors("ConditionalCheckFailedException")),
        ("errors botocore.ReadTimeout", Errors("botocore.ReadTimeout")),
        ("drill throttle partner-acme", Drill("throttle", "partner-acme")),
        (
            "drill throttle partner-acme faults=throttle=0.3,timeout=0.05 for=5m",
            Drill("throttle", "partner-acme", {"faults": "throttle=0.3,timeout=0.05", "for": "5m"}),
        ),
        (
            "drill throttle partner-acme faults=throttle=30% window=5m",
            Drill("throttle", "partner-acme", {"faults": "throttle=30%", "window": "5m"}),
        ),
    ],
)
def test_each_subcommand_of_the_contract_parses_to_its_command(text, command):
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("LIST", ListCommand()),
        ("Help throttle", Help("throttle")),
        (f"STATUS {EXECUTION}", Status(EXECUTION)),
        (f"Timeline {EXECUTION}", Timeline(EXECUTION)),
        (f"CANCEL {EXECUTION}", Cancel(EXECUTION)),
        ("Errors", Errors()),
        ("DRILL throttle partner-acme", Drill("throttle", "partner-acme")),
    ],
)
def test_subcommand_words_are_case_insensitive(text, command):
    assert parse(text) == command


def test_execution_ids_are_case_insensitive_and_come_back_lowercase():
    assert parse(f"status {EXECUTION.upper()}") == Status(EXECUTION)
    assert parse(f"cancel {EXECUTION.upper()}") == Cancel(EXECUTION)


@pytest.mark.parametrize("text", ["", " ", "   ", "\t", "\n", " \t\n ", "\u00a0", "\u3000"])
def test_empty_or_blank_text_opens_the_start_form(text):
    assert parse(text) == StartForm()


@pytest.mark.parametrize("text", ["start", "START", " start "])
def test_start_alone_opens_the_start_form(text):
    assert parse(text) == StartForm()


def test_start_followed_by_words_is_still_a_runbook_named_start():
    assert parse("start partner-acme") == StartRun("start", "partner-acme")


@pytest.mark.parametrize(
    "text",
    [
        "  throttle   partner-acme  ",
        "throttle\tpartner-acme",
        "throttle\npartner-acme",
        "throttle\u00a0partner-acme",  # Slack's non-breaking space
        "throttle\u3000partner-acme",  # ideographic space
        "\n throttle \n partner-acme \n",
    ],
)
def test_any_run_of_whitespace_separates_words(text):
    assert parse(text) == StartRun("throttle", "partner-acme")


def test_an_execution_id_made_by_the_bot_is_accepted_by_every_id_command():
    made = grammar.new_execution_id("T1:1234.5678:U1")
    assert grammar.EXECUTION_ID.fullmatch(made)
    assert [parse(f"{verb} {made}") for verb in ("status", "timeline", "cancel")] == [
        Status(made),
        Timeline(made),
        Cancel(made),
    ]


def test_a_redelivered_request_names_the_same_execution_and_another_request_does_not():
    assert grammar.new_execution_id("T1:a:U1") == grammar.new_execution_id("T1:a:U1")
    assert grammar.new_execution_id("T1:a:U1") != grammar.new_execution_id("T1:b:U1")


# -- bad subcommands say what is valid ----------------------------------------------------------


@pytest.mark.parametrize("verb", ["status", "timeline", "cancel"])
def test_an_id_command_without_an_id_shows_an_example_id(verb):
    message = refusal(verb)
    assert f"`{verb}` takes one execution id" in message and f"/runbook {verb} rb-" in message


@pytest.mark.parametrize("verb", ["status", "timeline", "cancel"])
def test_an_id_command_with_two_ids_is_refused(verb):
    assert "takes one execution id" in refusal(f"{verb} {EXECUTION} {EXECUTION}")


@pytest.mark.parametrize(
    "word",
    [
        "rb-1",
        "rb-abcdefghi",
        "rb-abcdefghijk",
        "rb-abcdefgh01",
        "xx-abcdefghij",
        "abcdefghij",
        "rb_abcdefghij",
    ],
)
def test_a_malformed_execution_id_is_refused_with_the_shape_of_a_real_one(word):
    message = refusal(f"status {word}")
    assert f"`{word}` is not an execution id" in message
    assert "`rb-` and 10 letters or digits 2–7" in message and "e.g. rb-" in message


def test_list_takes_no_argument_and_the_answer_shows_the_grammar():
    message = refusal("list partner-acme")
    assert "`list` takes at most 0 argument(s), not 1" in message and grammar.GRAMMAR in message


def test_help_takes_at_most_one_runbook():
    message = refusal("help throttle replay")
    assert "`help` takes at most 1 argument(s), not 2" in message and grammar.GRAMMAR in message


def test_help_for_a_badly_named_runbook_says_what_names_look_like():
    message = refusal("help Throttle!")
    assert "is not a runbook name" in message and "lowercase letters, digits and dashes" in message


def test_errors_takes_at_most_one_code():
    assert "`errors` takes at most 1 argument(s), not 2" in refusal("errors A B")


@pytest.mark.parametrize("code", ["not-a-code", "1Code", "Code!", "_Code", "Côde"])
def test_errors_with_something_that_is_not_a_code_shows_what_codes_look_like(code):
    message = refusal(f"errors {code}")
    assert "is not an error code" in message and "`ProvisionedThroughputExceededException`" in message


def test_a_bad_error_code_is_shortened_and_defused_in_the_answer_like_every_other_echoed_word():
    message = refusal("errors " + "a`b" * 300)
    assert "a`b" not in message and len(message) < 300


@pytest.mark.parametrize(
    ("text", "verb"),
    [("throttle", ""), ("", "drill "), ("throttle", "drill ")],
)
def test_a_run_without_runbook_and_partner_shows_the_run_syntax_an_example_and_the_grammar(text, verb):
    message = refusal(verb + text)
    assert f"`/runbook {verb}&lt;runbook&gt; &lt;partner&gt; [key=value ...]`" in message
    assert f"e.g. `/runbook {verb}throttle partner-acme`" in message and "`/runbook list`" in message
    assert grammar.GRAMMAR in message


@pytest.mark.parametrize(
    "text", ["window=5m throttle partner-acme", "throttle window=5m partner-acme", "a=b c=d e f"]
)
def test_parameters_before_the_runbook_and_partner_are_refused(text):
    assert "name a runbook and a partner" in refusal(text)


@pytest.mark.parametrize("extra", ["extra", "partner-globex", '"two words"'])
def test_a_third_positional_word_is_refused_and_named(extra):
    message = refusal(f"throttle partner-acme {extra}")
    assert "unexpected `" in message and "only key=value parameters are accepted" in message
    assert 'note="two words"' in message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("Throttle partner-acme", "runbook"),
        ("throttle Partner-Acme", "partner"),
        ("throttle! partner-acme", "runbook"),
        ("-throttle partner-acme", "runbook"),
        ("throttle partner_acme", "partner"),
        ("thröttle partner-acme", "runbook"),
        ("throttle ｐartner-acme", "partner"),  # fullwidth letter
        ("t" * 65 + " partner-acme", "runbook"),
    ],
)
def test_a_bad_name_says_what_names_look_like_and_where_to_find_them(text, what):
    message = refusal(text)
    assert f"is not a {what} name" in message and "lowercase letters, digits and dashes" in message
    assert "`/runbook list` shows them" in message


def test_names_are_up_to_64_characters():
    name = "t" * 64
    assert parse(f"{name} partner-acme") == StartRun(name, "partner-acme")


# -- key=value parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "word", ["Window=5m", "1window=5m", "win-dow=5m", "=5m", "wíndow=5m", "_window=5m", "w" * 33 + "=1"]
)
def test_a_malformed_key_says_what_keys_look_like(word):
    message = refusal(f"throttle partner-acme {word}")
    assert "is not a key=value parameter" in message
    assert "keys are lowercase letters, digits and _ (up to 32), e.g. window=30m" in message


def test_keys_are_up_to_32_characters():
    key = "k" * 32
    assert parse(f"throttle partner-acme {key}=1").params == {key: "1"}


@pytest.mark.parametrize("word", ["window=", 'window=""', "window=''"])
def test_a_key_without_a_value_shows_how_to_write_one(word):
    assert "parameter `window` has no value; write window=&lt;value&gt;" in refusal(
        f"throttle partner-acme {word}"
    )


@pytest.mark.parametrize(
    "words", ["window=1m window=2m", "window=1m mode=x window=1m", "note=\"a\" note='b'"]
)
def test_a_repeated_key_is_refused_rather_than_one_value_silently_winning(words):
    key = words.split("=")[0]
    assert f"parameter `{key}` is given twice; give it once" in refusal(f"throttle partner-acme {words}")


def test_only_the_first_equals_sign_separates_key_and_value():
    assert parse("drill throttle partner-acme faults=throttle=0.3,timeout=0.05").params == {
        "faults": "throttle=0.3,timeout=0.05"
    }
    assert parse("throttle partner-acme expr=a==b").params == {"expr": "a==b"}


def test_unknown_keys_pass_the_grammar_and_are_left_to_the_runbook_to_judge():
    # The grammar knows no runbook: any well-formed key is syntax; bind_parameters names the unknown ones.
    assert parse("throttle partner-acme no_such_key=1").params == {"no_such_key": "1"}


def test_a_value_of_exactly_256_characters_is_accepted_and_257_is_refused():
    assert parse("throttle partner-acme note=" + "v" * 256).params == {"note": "v" * 256}
    assert "the value of `note` is 257 characters; at most 256 are accepted" in refusal(
        "throttle partner-acme note=" + "v" * 257
    )


def test_twenty_parameters_are_accepted_and_twenty_one_are_refused():
    twenty = " ".join(f"k{i}=v" for i in range(20))
    assert len(parse(f"throttle partner-acme {twenty}").params) == 20
    assert "21 parameters given; at most 20 are accepted" in refusal(f"throttle partner-acme {twenty} k20=v")


def test_a_command_of_exactly_1000_characters_is_read_and_1001_is_refused():
    padded = "throttle partner-acme" + " " * (1000 - len("throttle partner-acme"))
    assert len(padded) == 1000 and parse(padded) == StartRun("throttle", "partner-acme")
    message = refusal("x" * 1001)
    assert "the command is 1001 characters long; at most 1000 are accepted" in message


# -- quoting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ('note="two words"', "two words"),
        ("note='two words'", "two words"),
        ('"note=two words"', "two words"),  # quotes may start anywhere in the word, as in a shell
        ("note=\"a\"'b'c", "abc"),  # adjacent quoted parts join
        ('note="it\'s"', "it's"),  # the other quote is literal inside
        ("note='say \"hi\"'", 'say "hi"'),
        ('note="say \\"hi\\""', 'say "hi"'),  # escaped double quote inside double quotes
        ("note='it\\'s'", "it's"),  # escaped single quote inside single quotes
        ('note="back\\\\slash"', "back\\slash"),  # escaped backslash
        ('note="a\\nb"', "a\\nb"),  # any other backslash is kept as written
        ('note="  padded  "', "  padded  "),
        ('note="line one\nline two"', "line one\nline two"),
        ('note="="', "="),
        ('note="key=value"', "key=value"),
    ],
)
def test_quoted_values_keep_what_is_inside_the_quotes(word, value):
    assert parse(f"throttle partner-acme {word}").params == {"note": value}


def test_a_backslash_outside_quotes_is_an_ordinary_character_not_an_escape():
    assert parse("throttle partner-acme path=C:\\tmp").params == {"path": "C:\\tmp"}
    assert "unexpected `b`" in refusal("throttle partner-acme note=a\\ b")


@pytest.mark.parametrize(
    ("text", "quote"),
    [
        ('throttle partner-acme note="unterminated', '"'),
        ("throttle partner-acme note='unterminated", "'"),
        ('throttle partner-acme note="a\\"', '"'),  # the only closing quote is escaped
        ('"', '"'),
        ("help '", "'"),
        ("throttle partner-acme note=\u201cunterminated", '"'),
    ],
)
def test_an_unterminated_quote_names_the_quote_and_shows_a_closed_example(text, quote):
    message = refusal(text)
    assert f"a {quote} quote is never closed" in message and 'e.g. note="two words"' in message


def test_unterminated_quote_says_where_the_quote_opened():
    message = refusal('throttle partner-acme note="fine" reason="open here')
    assert "reason" in message or "column" in message or "open here" in message


# -- Slack's smart quotes and other unicode ------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("note=\u201ctwo words\u201d", "two words"),  # “ ” as macOS and iOS substitute them
        ("note=\u2018two words\u2019", "two words"),  # ‘ ’
        ("note=\u201etwo words\u201c", "two words"),  # „ “ (German)
        ("note=\u201atwo words\u2018", "two words"),  # ‚ ‘
        ("note=\u201cit\u2019s fine\u201d", "it's fine"),  # a smart apostrophe inside smart quotes
        ('note="mixed\u201d', "mixed"),  # an ASCII quote closed by a smart one
        ("note=\u201csay \\\u201dhi\\\u201d\u201d", 'say "hi"'),  # escaped smart quotes come back ASCII
    ],
)
def test_slacks_smart_quotes_work_as_quotes(typed, value):
    assert parse(f"throttle partner-acme {typed}").params == {"note": value}


def test_a_smart_apostrophe_in_an_unquoted_word_opens_a_quote_like_an_ascii_one_and_says_so():
    # Slack turns `it's` into `it’s`; like the ASCII apostrophe it opens a quote, and the answer
    # shows how to quote the value instead.
    assert refusal("throttle partner-acme note=it\u2019s") == refusal("throttle partner-acme note=it's")
    assert "' quote is never closed" in refusal("throttle partner-acme note=it\u2019s")


def test_guillemets_and_other_quote_like_characters_are_ordinary_characters():
    assert parse("throttle partner-acme note=\u00abx\u00bb").params == {"note": "\u00abx\u00bb"}


@pytest.mark.parametrize("value", ["ünïcødé", "日本語", "→≥≤", "🙂", "🇩🇪", "👍🏽", "Ωmega", "a\u0301"])
def test_unicode_values_come_back_as_written(value):
    assert parse(f'throttle partner-acme note="{value}"').params == {"note": value}
    assert parse(f"throttle partner-acme note={value}").params == {"note": value}


@pytest.mark.parametrize(
    ("char", "code"),
    [
        ("\u0000", "U+0000"),
        ("\u0007", "U+0007"),
        ("\r", "U+000D"),
        ("\u001b", "U+001B"),
        ("\u007f", "U+007F"),
        ("\u200b", "U+200B"),  # zero-width space
        ("\u200d", "U+200D"),  # zero-width joiner (also inside emoji sequences)
        ("\u202e", "U+202E"),  # right-to-left override
        ("\ufeff", "U+FEFF"),  # byte-order mark
    ],
)
def test_control_and_invisible_format_characters_are_refused_by_code_point(char, code):
    message = refusal(f"throttle partner-acme note=a{char}b")
    assert f"control character ({code})" in message and "remove it and try again" in message


# -- Slack-escaped text -------------------------------------------------------------------------


def test_a_user_mention_where_a_runbook_belongs_is_refused_as_a_name():
    message = refusal("<@U123|bob> partner-acme")
    assert "is not a runbook name" in message and "`/runbook list`" in message


def test_a_channel_mention_where_a_partner_belongs_is_refused_as_a_name():
    assert "is not a partner name" in refusal("throttle <#C123|acme-ops>")


def test_mentions_in_values_are_passed_on_verbatim():
    # The manifest sets should_escape: false, so Slack does not wrap them; if it did, the grammar keeps them.
    params = parse("throttle partner-acme owner=<@U123|bob> where=<#C123|ops>").params
    assert params == {"owner": "<@U123|bob>", "where": "<#C123|ops>"}


@pytest.mark.parametrize(
    ("sent", "typed"), [("a &amp; b", "a & b"), ("x&lt;5", "x<5"), ("x&gt;5", "x>5"), ("&amp;lt;", "&lt;")]
)
def test_slacks_html_escapes_are_decoded_in_values(sent, typed):
    assert parse(f'throttle partner-acme note="{sent}"').params == {"note": typed}


def test_escaped_characters_never_make_a_name_valid():
    assert "is not a runbook name" in refusal("throttle&amp; partner-acme")


# -- tokenize on its own ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('a "" b', ["a", "", "b"]),  # an empty quoted word is a word
        ('"a b"c', ["a bc"]),
        ("'a' 'b'", ["a", "b"]),
        ("", []),
    ],
)
def test_tokenize_splits_words_like_a_shell(text, words):
    assert tokenize(text) == words


# -- properties ---------------------------------------------------------------------------------

VOCABULARY = [
    *["throttle", "replay", "partner-acme", "partner-globex", "drill", "list", "help", "status"],
    *["timeline", "cancel", "errors", "LIST", "Help", EXECUTION, "rb-1", "RB-K3J7Q2M4XA"],
    *["ProvisionedThroughputExceededException", "window=5m", "for=2m", "faults=throttle=0.3", "k=v"],
    *["K=v", "=", "==", "=v", "k=", '"', "'", "\u201c", "\u201d", "\u2018", "\u2019", "\\", "\\\\"],
    *[" ", "  ", "\t", "\n", "\u00a0", "\u3000", 'note="a b"', "note='a b'", "é", "🙂", "\u0000"],
    *["\u200b", "\u200d", "<@U123|bob>", "<#C123|ops>", "&amp;", "&lt;", "&gt;", "`", "x" * 300, "v" * 257],
]
words = st.lists(st.sampled_from(VOCABULARY), max_size=14)


def check_parse(text: str) -> grammar.Command | None:
    """Parse; a refusal must be a CommandError that says what is valid. Returns None on refusal."""
    try:
        command = parse(text)
    except CommandError as error:
        message = str(error)
        assert message.strip()
        assert GUIDANCE.search(message), f"{message!r} does not say what is valid"
        return None
    assert parse(text) == command  # pure: the same text, the same command
    return command


def check_well_formed(command: grammar.Command) -> None:
    if isinstance(command, StartRun | Drill):
        assert grammar.NAME.fullmatch(command.runbook) and grammar.NAME.fullmatch(command.partner)
        assert len(command.params) <= grammar.MAX_PARAMS
        for key, value in command.params.items():
            assert grammar.KEY.fullmatch(key) and 0 < len(value) <= grammar.MAX_VALUE
    elif isinstance(command, Status | Timeline | Cancel):
        assert grammar.EXECUTION_ID.fullmatch(command.execution_id)
    elif isinstance(command, Help) and command.runbook is not None:
        assert grammar.NAME.fullmatch(command.runbook)
    elif isinstance(command, Errors) and command.code is not None:
        assert grammar.ERROR_CODE.fullmatch(command.code)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=1200))
def test_any_text_parses_or_is_refused_with_a_command_error_that_says_what_is_valid(text):
    command = check_parse(text)
    if command is not None:
        check_well_formed(command)


@settings(max_examples=1000, deadline=None)
@given(words, st.sampled_from([" ", "", "\t"]))
def test_any_mix_of_the_grammars_words_parses_or_is_refused_with_guidance(tokens, sep):
    command = check_parse(sep.join(tokens))
    if command is not None:
        check_well_formed(command)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1000))
def test_tokenize_never_raises_anything_but_a_command_error(text):
    try:
        result = tokenize(text)
    except CommandError as error:
        assert GUIDANCE.search(str(error))
        return
    assert all(isinstance(w, str) for w in result)


# Round trips: a command written out with any quoting style parses back to itself.

names = st.from_regex(grammar.NAME, fullmatch=True)
keys = st.from_regex(grammar.KEY, fullmatch=True)
# Values as Slack can carry them: no control or format characters; smart quotes and NBSP are
# normalised by the grammar, so they are left out of what must come back byte for byte.
value_chars = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs"),
    blacklist_characters="\u201c\u201d\u201e\u2018\u2019\u201a\u00a0",
)
values = st.text(value_chars, min_size=1, max_size=40)
params = st.dictionaries(keys, values, max_size=6)
exec_ids = st.from_regex(grammar.EXECUTION_ID, fullmatch=True)
error_codes = st.from_regex(grammar.ERROR_CODE, fullmatch=True).filter(lambda c: len(c) <= 60)
commands = st.one_of(
    st.builds(StartRun, names, names, params),
    st.builds(Drill, names, names, params),
    st.just(ListCommand()),
    st.builds(Help, st.none() | names),
    st.builds(Status, exec_ids),
    st.builds(Timeline, exec_ids),
    st.builds(Cancel, exec_ids),
    st.builds(Errors, st.none() | error_codes),
)
RESERVED = {"list", "help", "status", "timeline", "cancel", "errors", "drill", "retry"}


def quote(value: str, style: str) -> str:
    opening, closing = {"double": ('"', '"'), "single": ("'", "'"), "smart": ("\u201c", "\u201d")}[style]
    inner = '"' if style == "smart" else opening
    return opening + value.replace("\\", "\\\\").replace(inner, "\\" + inner) + closing


def as_text(command: grammar.Command, style: str) -> str:
    match command:
        case StartRun() | Drill():
            verb = "drill " if isinstance(command, Drill) else ""
            pairs = " ".join(f"{k}={quote(v, style)}" for k, v in command.params.items())
            return f"{verb}{command.runbook} {command.partner} {pairs}".strip()
        case ListCommand():
            return "list"
        case Help():
            return f"help {command.runbook or ''}".strip()
        case Status() | Timeline() | Cancel():
            return f"{type(command).__name__.lower()} {command.execution_id}"
        case Errors():
            return f"errors {command.code or ''}".strip()
    raise AssertionError(command)


@settings(max_examples=400, deadline=None)
@given(commands, st.sampled_from(["double", "single", "smart"]))
def test_every_command_written_out_with_any_quoting_parses_back_to_itself(command, style):
    if isinstance(command, StartRun):
        assume(command.runbook not in RESERVED)
    text = as_text(command, style)
    assume(len(text) <= grammar.MAX_TEXT)
    assert parse(text) == command


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(value_chars, max_size=20), max_size=8), st.sampled_from(["double", "single"]))
def test_tokenize_gives_back_any_words_that_were_quoted(word_list, style):
    text = " ".join(quote(w, style) for w in word_list)
    assume(len(text) <= grammar.MAX_TEXT)
    assert tokenize(text) == word_list


# -- what happens to the parsed parameters: unknown keys are refused, nothing is started --------


class InMemoryExecutions:
    """Just enough of ExecutionStore for starting runs: what was created is what we assert on."""

    def __init__(self) -> None:
        self.created: dict[str, object] = {}
        self.locks: dict[str, str] = {}

    def create(self, ex) -> bool:
        if ex.execution_id in self.created:
            return False
        self.created[ex.execution_id] = ex
        return True

    def channel_unreachable(self, channel_id: str) -> str:
        return ""

    def lock_holder(self, lock) -> str | None:
        return self.locks.get(lock["pk"])

    def create_locked(self, ex, locks, *, force: bool = False) -> str | None:
        held = {self.locks.get(lock["pk"]) for lock in locks} - {None}
        if held and not force:
            return held.pop()
        self.locks.update({lock["pk"]: ex.execution_id for lock in locks})
        return None if self.create(ex) else ex.execution_id

    def get(self, execution_id: str, *, consistent: bool = True):
        return self.created.get(execution_id)


@pytest.fixture
def service():
    from bot.catalog import load_catalog
    from bot.slack.commands import CommandService

    store = InMemoryExecutions()
    return CommandService(store, load_catalog, lambda: 1_795_000_000_000), store


def answer(service_and_store, text: str):
    from bot.slack.commands import Invocation

    service, store = service_and_store
    message = service.answer(Invocation(text, "U0DEVONCALL", "C0ACMEOPS", "T0LOCAL", f"trigger:{text}"))
    return message, store.created


def test_an_unknown_key_is_refused_with_the_closest_known_one_and_nothing_starts(service):
    message, created = answer(service, "throttle partner-acme windw=5m")
    assert "unknown parameter `windw`; did you mean `window`?" in message.text
    assert "Parameters of throttle:" in message.text and created == {}


def test_a_well_formed_start_creates_one_run(service):
    message, created = answer(service, "throttle partner-acme window=5m")
    assert len(created) == 1 and next(iter(created)) in message.text


def test_drill_only_keys_on_a_run_that_is_not_a_drill_are_refused_and_nothing_starts(service):
    message, created = answer(service, "throttle partner-acme for=5m")
    assert created == {}
    assert "`for`" in message.text or "for=" in message.text


# -- /runbook plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("plan throttle partner-acme", grammar.PlanRun("throttle", "partner-acme")),
        ("PLAN throttle partner-acme", grammar.PlanRun("throttle", "partner-acme")),
        (
            'plan throttle partner-acme mode=provisioned write_units=400 note="two words"',
            grammar.PlanRun(
                "throttle", "partner-acme", {"mode": "provisioned", "write_units": "400", "note": "two words"}
            ),
        ),
    ],
)
def test_plan_parses_like_a_run_with_its_parameters(text, command):
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plan", "/runbook plan &lt;runbook&gt; &lt;partner&gt;"),
        ("plan throttle", "e.g. `/runbook plan throttle partner-acme`"),
        ("plan throttle partner-acme extra", "unexpected `extra`"),
        ("plan throttle partner-acme mode=", "parameter `mode` has no value"),
        ("plan throttle partner-acme mode=a mode=b", "given twice"),
        ("plan Throttle! partner-acme", "is not a runbook name"),
    ],
)
def test_a_bad_plan_says_what_is_valid(text, expected):
    assert expected in refusal(text)


def test_the_help_names_the_plan_command():
    assert "`/runbook plan &lt;runbook&gt; &lt;partner&gt; [key=value ...]` a dry run" in grammar.GRAMMAR
