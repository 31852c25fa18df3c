"""`runbook-bot validate`: every problem as `file:line: message`, exit 1; the shipped library is clean."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot import catalog
from bot.cli import main

REPO = Path(__file__).resolve().parents[3]
HEAD = "# yaml-language-server: $schema=./schema.json\nname: {name}\ntitle: T\ndescription: D\n"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks", ignore=shutil.ignore_patterns(".compiled"))
    return tmp_path / "runbooks"


def validate(capsys, *paths: Path) -> tuple[int, list[str]]:
    status = main(["validate", *map(str, paths)])
    return status, [
        line for line in capsys.readouterr().out.splitlines() if line and not line.startswith("ok")
    ]


def test_the_shipped_runbooks_partners_and_error_catalog_are_valid(capsys):
    assert validate(capsys) == (0, [])


@pytest.mark.parametrize(
    ("body", "line", "says"),
    [
        ("steps:\n  - {id: a, action: notify, inputs: {text: hi}, colour: red}\n", 6, "colour"),
        ("steps:\n  - {id: a, action: dynamodb.teleport}\n", 6, "unknown action `dynamodb.teleport`"),
        ("steps:\n  - {id: a, action: notify, inputs: {text: hi}, next: nowhere}\n", 6, "nowhere"),
        (
            "steps:\n  - {id: a, action: notify, inputs: {text: hi}}\n"
            "  - {id: b, action: notify, inputs: {text: '{{ steps.a.outputs.missing }}'}}\n",
            7,
            "missing",
        ),
        (
            "steps:\n  - {id: a, action: notify, inputs: {text: hi}, next: b}\n"
            "  - {id: b, action: notify, inputs: {text: hi}, next: a}\n",
            None,
            "cycle",
        ),
        (
            "steps:\n  - {id: a, action: notify, inputs: {text: hi}, is_end: true}\n"
            "  - {id: b, action: notify, inputs: {text: hi}}\n",
            7,
            "unreachable",
        ),
        (
            "parameters:\n  window: {default: 5m}\nsteps:\n  - {id: a, action: notify, inputs: {text: hi}}\n",
            6,
            "type",
        ),
        (
            "steps:\n  - {id: a, action: notify, inputs: {text: hi}}\n  - {id: a, action: notify, inputs: {text: hi}}\n",
            7,
            "`a`",
        ),
        ("steps:\n  - {id: a, action: notify, inputs: {text: hi}\n", None, ""),
    ],
)
def test_each_broken_runbook_is_reported_at_its_file_and_line(capsys, library, body, line, says):
    broken = library / "broken.yaml"
    broken.write_text(HEAD.format(name="broken") + body)
    status, problems = validate(capsys, broken)
    assert status == 1 and problems
    for problem in problems:
        assert re.match(rf"{re.escape(str(broken))}:\d+: \S", problem), problem
    assert any(says.lower() in p.lower() for p in problems), problems
    if line is not None:
        assert any(p.startswith(f"{broken}:{line}:") for p in problems), problems


def test_a_partner_file_with_bad_fields_is_reported_at_their_lines(capsys, library):
    partner = library / "partners" / "partner-acme.yaml"
    text = partner.read_text()
    text = text.replace(
        "drill_target: {orders: acme-orders-drill}", "drill_target: {ledger: acme-ledger-drill}"
    )
    text = text.replace('faults: "throttle=0.2,timeout=0.02"', 'faults: "slow=0.5"')
    text = text.replace("runbook: throttle", "runbook: throttel")
    partner.write_text(text)
    status, problems = validate(capsys, partner)
    assert status == 1
    joined = "\n".join(problems)
    assert "drill_target names `ledger`, which is not a table alias" in joined
    assert "`slow=0.5` is not a fault" in joined
    assert "alarm mapping names runbook `throttel`" in joined
    assert all(re.match(rf"{re.escape(str(partner))}:\d+: ", p) for p in problems)


def test_a_missing_path_is_a_problem_not_a_crash(capsys, tmp_path):
    assert validate(capsys, tmp_path / "nope.yaml") == (
        1,
        [f"{tmp_path / 'nope.yaml'}:1: no such file or folder"],
    )


def test_the_compiled_catalog_is_used_only_while_every_file_is_unchanged(library):
    compiled = catalog.compile_catalog(library)
    assert compiled.exists() and catalog.compiled_path(library) == compiled
    throttle = library / "throttle.yaml"
    throttle.write_text(
        throttle.read_text().replace("title: Throttled requests on a partner table", "title: Edited")
    )
    assert catalog.compiled_path(library) != compiled, "an edit changes the fingerprint"
    catalog.forget_catalog()
    try:
        assert catalog.load_catalog(library).runbooks["throttle"].title == "Edited"
    finally:
        catalog.forget_catalog()
