"""`runbook-bot validate` (CONTRACT §6): every problem as `file:line: message` at the line it stands
on, exit 1; the shipped library is clean. And the compiled catalog: trusted only while every file
it was compiled from is unchanged.

Each broken file below marks the line its problem must be reported at with a trailing `#!`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import catalog
from bot.actions import REGISTRY
from bot.cli import main
from bot.engine.loader import check_runbook, load_runbook
from bot.engine.yamlfile import load_yaml
from bot.exceptions import CatalogError

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "runbooks"
MARK = "#!"


@pytest.fixture(autouse=True)
def fresh_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No catalog cached across tests, and the default root is the shipped library."""
    monkeypatch.delenv("RUNBOOKS_DIR", raising=False)
    yield


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A copy of the shipped runbooks, partners, schemas and error catalog (no compiled catalog)."""
    shutil.copytree(SHIPPED, tmp_path / "runbooks", ignore=shutil.ignore_patterns(".compiled"))
    return tmp_path / "runbooks"


def marked_line(text: str) -> int:
    (line,) = [n for n, content in enumerate(text.splitlines(), 1) if content.rstrip().endswith(MARK)]
    return line


def cli_validate(
    capsys: pytest.CaptureFixture[str], *paths: Path, compile: bool = False
) -> tuple[int, list[str]]:
    status = main(["validate", *(["--compile"] if compile else []), *map(str, paths)])
    out = capsys.readouterr().out.splitlines()
    return status, [line for line in out if line and not line.startswith(("ok:", "compiled:"))]


def problem_re(path: Path, line: int | str = r"\d+") -> str:
    return rf"^{re.escape(str(path))}:{line}: \S.*$"


# -- broken runbooks ------------------------------------------------------------------------------

STEP = "  - id: ID\n    action: notify\n    inputs: {text: hi}\n"

RUNBOOKS = {
    "schema-wrong-type": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n"
        "    timeout_seconds: soon  #!\n",
        "steps.0.timeout_seconds: 'soon' is not of type 'integer'",
    ),
    "schema-bad-enum": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n"
        "    risk: extreme  #!\n",
        "steps.0.risk: 'extreme' is not one of low, high, critical",
    ),
    "schema-missing-title": (
        "name: NAME  #!\nsteps:\n" + STEP.replace("ID", "a"),
        "'title' is a required property",
    ),
    "unknown-action": (
        "name: NAME\ntitle: T\nsteps:\n" + STEP.replace("ID", "a") + "  - id: b\n    title: second\n"
        "    action: dynamodb.teleport  #!\n",
        "unknown action `dynamodb.teleport`; known: approval, check",
    ),
    "next-to-missing-step": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: notify\n    inputs: {text: hi}\n"
        "    next: nowhere\n",
        "step `a` goes to `nowhere`, which does not exist",
    ),
    "on-failure-to-missing-step": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: notify\n    inputs: {text: hi}\n"
        "    on_failure: step:void\n",
        "step `a` goes to `void`, which does not exist",
    ),
    "reference-to-missing-step": (
        "name: NAME\ntitle: T\nsteps:\n" + STEP.replace("ID", "a") + "  - id: b  #!\n    action: notify\n"
        "    inputs:\n      text: '{{ steps.ghost.outputs.text }}'\n",
        "step `b`: `steps.ghost.outputs.text`: no step `ghost`",
    ),
    "reference-to-missing-output": (
        "name: NAME\ntitle: T\nsteps:\n" + STEP.replace("ID", "a") + "  - id: b  #!\n    action: notify\n"
        "    inputs:\n      text: '{{ steps.a.outputs.nope }}'\n",
        "step `b`: `steps.a.outputs.nope`: `notify` has no output `nope` (outputs: text)",
    ),
    "reference-to-a-later-step": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: notify\n"
        "    inputs: {text: '{{ steps.b.outputs.text }}'}\n" + STEP.replace("ID", "b"),
        "step `b` runs after `a`, so its outputs do not exist yet",
    ),
    "reference-to-missing-parameter": (
        "name: NAME\ntitle: T\nparameters:\n  table: {type: string}\nsteps:\n  - id: a  #!\n"
        "    action: wait\n    inputs: {seconds: '{{ params.window }}'}\n",
        "`params.window`: no parameter `window` (parameters: table)",
    ),
    "guard-on-an-action-without-pages": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n"
        "    guard_alarms: [acme-*-latency]  #!\n",
        "`notify` runs in one go, with no safe point to pause at, so it cannot be guarded; "
        "guard_alarms is for actions that work in pages (dynamodb.replay)",
    ),
    "guard-matching-every-alarm": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: dynamodb.replay\n    risk: high\n"
        "    inputs: {table: acme-orders}\n    guard_alarms:\n      - acme-orders-latency\n      - '*'  #!\n",
        "guard alarm `*` matches every alarm in the account",
    ),
    "guard-empty-list": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: dynamodb.replay\n    risk: high\n"
        "    inputs: {table: acme-orders}\n    guard_alarms: []  #!\n",
        "steps.0.guard_alarms",
    ),
    "cycle": (
        "name: NAME\ntitle: T\nsteps:\n"
        + STEP.replace("ID", "a")
        + STEP.replace("ID", "b")
        + "  - id: c  #!\n    action: notify\n    inputs: {text: hi}\n    next: b\n",
        "steps form a cycle: b → c → b",
    ),
    "self-loop": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: notify\n    inputs: {text: hi}\n"
        "    next: a\n",
        "steps form a cycle: a → a",
    ),
    "unreachable-step": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n"
        "    is_end: true\n  - id: b  #!\n    action: notify\n    inputs: {text: hi}\n",
        "step `b` is unreachable (no step leads to it)",
    ),
    "unreachable-on-failure-step": (
        "name: NAME\ntitle: T\nsteps:\n" + STEP.replace("ID", "a") + "on_failure:\n  - id: r1\n"
        "    action: notify\n    inputs: {text: hi}\n    is_end: true\n  - id: r2  #!\n"
        "    action: notify\n    inputs: {text: hi}\n",
        "step `r2` is unreachable (no step leads to it)",
    ),
    "parameter-without-type": (
        "name: NAME\ntitle: T\nparameters:\n  table: {type: string}\n  window:  #!\n"
        "    default: 5m\nsteps:\n" + STEP.replace("ID", "a"),
        "parameters.window: 'type' is a required property",
    ),
    "parameter-bad-default": (
        "name: NAME\ntitle: T\nparameters:\n  window:\n    type: duration\n    default: forever  #!\n"
        "steps:\n" + STEP.replace("ID", "a"),
        "default of `window`: `forever` is not a duration",
    ),
    "enum-without-values": (
        "name: NAME\ntitle: T\nparameters:\n  mode: {type: enum}  #!\nsteps:\n" + STEP.replace("ID", "a"),
        "enum parameter `mode` needs `values`",
    ),
    "yaml-syntax-error": (
        "name: NAME\ntitle: T: colon  #!\nsteps:\n" + STEP.replace("ID", "a"),
        "not valid YAML: mapping values are not allowed here",
    ),
    "yaml-tab-indent": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n\taction: notify  #!\n",
        "not valid YAML: found character '\\t' that cannot start any token",
    ),
    "duplicate-yaml-key": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n"
        "    action: wait  #!\n",
        "key `action` repeats the one on line 6",
    ),
    "duplicate-step-id": (
        "name: NAME\ntitle: T\nsteps:\n"
        + STEP.replace("ID", "a")
        + STEP.replace("ID", "b")
        + "  - title: again\n"
        "    id: a  #!\n    action: notify\n    inputs: {text: hi}\n",
        "step id `a` is used twice",
    ),
    "duplicate-id-across-on-failure": (
        "name: NAME\ntitle: T\nsteps:\n" + STEP.replace("ID", "a") + "on_failure:\n  - action: notify\n"
        "    id: a  #!\n    inputs: {text: hi}\n",
        "step id `a` is used twice",
    ),
    "name-not-file-name": (
        "name: something-else  #!\ntitle: T\nsteps:\n" + STEP.replace("ID", "a"),
        "name `something-else` must match the file name `NAME`",
    ),
    "missing-required-input": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a\n    action: wait\n    inputs:  #!\n      reason: because\n",
        "step `a`: `wait` needs input `seconds`",
    ),
    "risky-action-without-approval": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: dynamodb.set_capacity\n"
        "    inputs: {table: t, mode: on-demand}\n",
        "`dynamodb.set_capacity` changes partner data or capacity: set `risk: high` "
        "(or `risk: critical` for the partner's critical quorum)",
    ),
    "invalid-expression": (
        "name: NAME\ntitle: T\nsteps:\n  - id: a  #!\n    action: notify\n"
        "    inputs: {text: '{{ params. }}'}\n",
        "is not a valid expression",
    ),
}


def write_runbook(folder: Path, case: str) -> tuple[Path, int, str]:
    body, says = RUNBOOKS[case]
    path = folder / f"{case}.yaml"
    text = "# yaml-language-server: $schema=./schema.json\n" + body.replace("NAME", case)
    path.write_text(text)
    return path, marked_line(text), says.replace("NAME", case)


@pytest.mark.parametrize("case", sorted(RUNBOOKS))
def test_validate_reports_a_broken_runbook_at_its_file_and_line_and_exits_1(capsys, library, case):
    path, line, says = write_runbook(library, case)
    status, problems = cli_validate(capsys, path)
    assert status == 1
    assert problems, "a broken file has at least one problem"
    for problem in problems:
        assert re.match(problem_re(path), problem), problem
    assert any(re.match(problem_re(path, line), p) and says in p for p in problems), (line, says, problems)


@pytest.mark.parametrize("case", sorted(RUNBOOKS))
def test_the_loader_raises_the_same_problems_the_cli_prints(capsys, library, case):
    path, _, _ = write_runbook(library, case)
    with pytest.raises(CatalogError) as raised:
        load_runbook(path, REGISTRY)
    assert raised.value.problems == catalog.validate_paths([path])
    _, printed = cli_validate(capsys, path)
    assert printed == raised.value.problems


def test_every_problem_of_a_file_is_reported_at_once(capsys, library):
    path = library / "many.yaml"
    text = (
        "name: many\ntitle: T\nparameters:\n  mode: {type: enum}\nsteps:\n"
        "  - id: a\n    action: dynamodb.teleport\n    next: nowhere\n"
        "  - id: b\n    action: notify\n    inputs: {text: '{{ steps.a.outputs.x }}'}\n"
    )
    path.write_text(text)
    status, problems = cli_validate(capsys, path)
    assert status == 1
    joined = "\n".join(problems)
    for says in ("needs `values`", "unknown action `dynamodb.teleport`", "goes to `nowhere`", "unreachable"):
        assert says in joined, (says, problems)


def test_problems_in_several_files_are_all_reported(capsys, library):
    first, line1, _ = write_runbook(library, "unknown-action")
    second, line2, _ = write_runbook(library, "cycle")
    status, problems = cli_validate(capsys, first, second)
    assert status == 1
    assert any(p.startswith(f"{first}:{line1}:") for p in problems)
    assert any(p.startswith(f"{second}:{line2}:") for p in problems)


def test_a_broken_runbook_in_a_library_folder_fails_the_folder(capsys, library):
    path, line, says = write_runbook(library, "unreachable-step")
    status, problems = cli_validate(capsys, library)
    assert status == 1
    assert problems == [f"{path}:{line}: {says}"]


@pytest.mark.parametrize(
    "text",
    [
        "name: k\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\n    colour: red  #!\n",
        "# c\nname: k\ntitle: T\nsteps:\n  - id: a\n    action: notify\n    inputs: {text: hi}\nowner: me  #!\n",
    ],
    ids=["in-a-step", "at-the-top"],
)
def test_an_unknown_key_is_reported_at_its_own_line(capsys, library, text):
    path = library / "k.yaml"
    path.write_text(text)
    status, problems = cli_validate(capsys, path)
    assert status == 1
    assert next(p for p in problems if "was unexpected" in p).startswith(f"{path}:{marked_line(text)}:")


# -- partner files ----------------------------------------------------------------------------------

PARTNER = (SHIPPED / "partners" / "partner-acme.yaml").read_text()

PARTNERS = {
    # case: (text of the shipped file, its replacement marking the reported line with #!, message)
    "bad-region": ("region: us-east-1", "region: mars  #!", "region: 'mars' does not match"),
    "bad-approver": (
        "approvers: [U0ACMELEAD, U0ACMESRE, S0ACMEONCALL]",
        "approvers: [U0ACMELEAD, bob]  #!",
        "approvers.1: 'bob' does not match",
    ),
    "sla-missing-resolution": (
        "sla:\n  response_minutes: 15\n  resolution_minutes: 120\n",
        "sla:  #!\n  response_minutes: 15\n",
        "sla: 'resolution_minutes' is a required property",
    ),
    "drill-target-unknown-alias": (
        "drill_target: {orders: acme-orders-drill, failed_requests: acme-failed-writes-drill}",
        "drill_target:\n  orders: acme-orders-drill\n  failed_requests: acme-failed-writes-drill\n  ledger: acme-ledger-drill  #!",
        "drill_target names `ledger`; valid keys: orders, failed_requests",
    ),
    "drill-target-missing-store": (
        "drill_target: {orders: acme-orders-drill, failed_requests: acme-failed-writes-drill}",
        "drill_target:  #!\n  orders: acme-orders-drill",
        "drill_target must cover every table alias and the failed-request store; missing: failed_requests",
    ),
    "drill-target-is-production": (
        "drill_target: {orders: acme-orders-drill, failed_requests: acme-failed-writes-drill}",
        "drill_target:\n  orders: acme-orders-drill\n  failed_requests: acme-failed-writes  #!",
        "drill_target `failed_requests` is `acme-failed-writes`, a production resource",
    ),
    "drill-unknown-fault": (
        'drill: {faults: "throttle=0.2,timeout=0.02", time_limit: 10m}',
        'drill:\n  faults: "slow=0.5"  #!\n  time_limit: 10m',
        "`slow=0.5` is not a fault",
    ),
    "drill-bad-time-limit": (
        'drill: {faults: "throttle=0.2,timeout=0.02", time_limit: 10m}',
        'drill:\n  faults: "throttle=0.2"\n  time_limit: soonish  #!',
        "drill.time_limit:",
    ),
    "alarm-unknown-runbook": (
        "    runbook: throttle",
        "    runbook: throttel  #!",
        "alarm mapping names runbook `throttel`",
    ),
    "override-unknown-runbook": (
        "  throttle: {window: 15m}",
        "  throttle: {window: 15m}\n  teleport: {speed: 3}  #!",
        "overrides name runbook `teleport`, which does not exist",
    ),
    "override-unknown-parameter": (
        "  throttle: {window: 15m}",
        "  throttle:\n    window: 15m\n    speed: 3  #!",
        "runbook `throttle` has no parameter `speed`",
    ),
    "override-bad-value": (
        "  throttle: {window: 15m}",
        "  throttle:\n    window: forever  #!",
        "override `throttle.window`:",
    ),
    "failed-requests-unknown-table": (
        "failed_requests: {kind: table, name: acme-failed-writes, target_table: orders}",
        "failed_requests:\n  kind: table\n  name: acme-failed-writes\n  target_table: ledger  #!",
        "failed_requests.target_table `ledger` is not a table alias",
    ),
    "approvals-unknown-level": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  high: 1\n  urgent: 2  #!",
        "approvals names risk level `urgent`; risk levels: high, critical",
    ),
    "approvals-zero": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  high: 0  #!",
        "approvals.high is `0`; it must be a whole number of distinct approvers from 1 to 10",
    ),
    "approvals-not-a-number": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  critical: two  #!",
        "approvals.critical is `two`; it must be a whole number",
    ),
    "approvals-a-boolean": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  high: true  #!",
        "approvals.high is `True`",
    ),
    "approvals-too-many": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  critical: 11  #!",
        "from 1 to 10",
    ),
    "approvals-critical-below-high": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals:\n  high: 2\n  critical: 1  #!",
        "approvals.critical (1) is below approvals.high (2)",
    ),
    "approvals-more-than-the-named-approvers": (
        "approvers: [U0ACMELEAD, U0ACMESRE, S0ACMEONCALL]\napproval_timeout_minutes: 30",
        "approvers: [U0ACMELEAD, U0ACMESRE]\napproval_timeout_minutes: 30\napprovals:\n  critical: 3  #!",
        "approvals.critical asks for 3 distinct approvers but `approvers` names only 2",
    ),
    "approvals-not-a-mapping": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\napprovals: 2  #!",
        "approvals maps risk levels (high, critical) to how many distinct approvers each needs",
    ),
    "guard-alarms-every-alarm": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\nguard_alarms:\n  - acme-*-latency\n  - '*?'  #!",
        "guard alarm `*?` matches every alarm in the account",
    ),
    "guard-alarms-not-a-list": (
        "approval_timeout_minutes: 30",
        "approval_timeout_minutes: 30\nguard_alarms: acme-latency  #!",
        "guard_alarms",
    ),
    "partner-yaml-error": (
        "display_name: Acme Logistics",
        "display_name: Acme: Logistics  #!",
        "not valid YAML",
    ),
}


@pytest.mark.parametrize("case", sorted(PARTNERS))
def test_validate_reports_a_bad_partner_field_at_its_line(capsys, library, case):
    old, new, says = PARTNERS[case]
    assert old in PARTNER, "the shipped partner file still has the line this case edits"
    text = PARTNER.replace(old, new, 1)
    path = library / "partners" / "partner-acme.yaml"
    path.write_text(text)
    line = marked_line(text)
    for paths in ([path], [library]):
        status, problems = cli_validate(capsys, *paths)
        assert status == 1, paths
        assert all(re.match(problem_re(path), p) for p in problems), problems
        hits = [p for p in problems if says in p]
        assert hits, (says, problems)
        assert any(p.startswith(f"{path}:{line}:") for p in hits), (line, problems)


def test_a_partners_approvals_set_the_quorum_of_each_risk_level(library):
    from bot.engine.partner_files import load_partner

    path = library / "partners" / "partner-acme.yaml"
    assert load_partner(path).quorum() == {"high": 1, "critical": 1}, "one approver unless the file says"
    path.write_text(PARTNER + "approvals: {high: 2}\n")
    assert load_partner(path).quorum() == {"high": 2, "critical": 2}, "critical is never below high"
    path.write_text(PARTNER + "approvals: {high: 1, critical: 3}\n")  # a user group may give the third
    assert load_partner(path).quorum() == {"high": 1, "critical": 3}


def test_a_step_may_declare_itself_critical_even_an_always_risky_action(library):
    from bot.engine.model import Risk

    runbook = library / "failover.yaml"
    runbook.write_text(
        "name: failover\ntitle: T\nsteps:\n"
        "  - {id: check, action: notify, inputs: {text: hi}, risk: critical}\n"
        "  - {id: scale, action: dynamodb.set_capacity, risk: critical, inputs: {table: acme-orders, mode: on-demand}}\n"
        "  - {id: tell, action: notify, inputs: {text: done}}\n"
    )
    loaded = load_runbook(runbook, REGISTRY)
    assert [s.risk for s in loaded.steps] == [Risk.CRITICAL, Risk.CRITICAL, Risk.LOW]
    assert [s.id for s in loaded.approval_steps] == ["check", "scale"], "critical steps ask for approval"


@pytest.mark.parametrize("value", ["Critical", "severe", "2", "true"])
def test_a_risk_level_that_does_not_exist_names_the_valid_ones(library, value):
    runbook = library / "shaky.yaml"
    runbook.write_text(
        f"name: shaky\ntitle: T\nsteps:\n  - {{id: a, action: notify, inputs: {{text: hi}}, risk: {value}}}\n"
    )
    with pytest.raises(CatalogError) as raised:
        load_runbook(runbook, REGISTRY)
    (problem,) = raised.value.problems
    assert problem.startswith(f"{runbook}:4: steps.0.risk: ") and problem.endswith(
        "is not one of low, high, critical"
    ), problem


def test_guard_alarms_load_from_the_partner_and_the_step(library):
    from bot.engine.partner_files import load_partner

    path = library / "partners" / "partner-acme.yaml"
    assert load_partner(path).guard_alarms == ()
    path.write_text(PARTNER + "guard_alarms: [acme-*-latency, acme-orders-errors]\n")
    assert load_partner(path).guard_alarms == ("acme-*-latency", "acme-orders-errors")
    runbook = library / "guarded.yaml"
    runbook.write_text(
        "name: guarded\ntitle: T\nsteps:\n  - id: replay\n    action: dynamodb.replay\n    risk: high\n"
        "    inputs: {table: acme-orders}\n    guard_alarms: [acme-orders-latency]\n"
    )
    assert load_runbook(runbook, REGISTRY).step("replay").guard_alarms == ("acme-orders-latency",)


def test_a_partner_named_unlike_its_file_is_reported(capsys, library):
    path = library / "partners" / "partner-initech.yaml"
    path.write_text(PARTNER)
    status, problems = cli_validate(capsys, path)
    assert status == 1
    assert problems == [f"{path}:3: name `partner-acme` must match the file name `partner-initech`"]


def test_a_missing_path_is_a_problem_not_a_crash(capsys, tmp_path):
    status, problems = cli_validate(capsys, tmp_path / "nope.yaml")
    assert (status, problems) == (1, [f"{tmp_path / 'nope.yaml'}:1: no such file or folder"])


# -- the shipped library --------------------------------------------------------------------------


def test_the_shipped_library_validates_clean_by_default(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "ok: runbooks, partners and error catalog are valid"


@pytest.mark.parametrize(
    "path",
    [SHIPPED, *sorted(SHIPPED.glob("*.yaml")), *sorted((SHIPPED / "partners").glob("*.yaml"))],
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_each_shipped_file_validates_clean(capsys, path):
    assert cli_validate(capsys, path) == (0, [])


@pytest.mark.parametrize("path", sorted(p for p in SHIPPED.glob("*.yaml") if p.name != "errors.yaml"))
def test_each_shipped_runbook_loads_with_no_problem(path):
    assert check_runbook(load_yaml(path), REGISTRY) == []
    assert load_runbook(path, REGISTRY).name == path.stem


# -- the compiled catalog -------------------------------------------------------------------------


def library_files(root: Path) -> list[Path]:
    return sorted([*root.glob("*.yaml"), *root.glob("*.json"), *(root / "partners").glob("*.yaml")])


def no_source_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(root: Path) -> None:
        raise AssertionError(f"validated {root} from source instead of using the compiled catalog")

    monkeypatch.setattr(catalog, "_validated", refuse)


def edit(path: Path) -> None:
    """A change of content that keeps the file valid."""
    if path.suffix == ".json":
        path.write_text(json.dumps(json.loads(path.read_text()), indent=1) + "\n")
    else:
        path.write_text(path.read_text() + "\n# edited\n")


def test_compile_keeps_one_catalog_named_by_the_content_fingerprint(library):
    first = catalog.compile_catalog(library)
    assert first == library / ".compiled" / f"catalog-{catalog.fingerprint(library)}.pickle"
    assert isinstance(pickle.loads(first.read_bytes()), catalog.Catalog)
    edit(library / "throttle.yaml")
    second = catalog.compile_catalog(library)
    assert second != first
    assert list((library / ".compiled").glob("*.pickle")) == [second], "the stale one is removed"


def test_an_unchanged_library_loads_from_the_compiled_catalog_without_validating(monkeypatch, library):
    catalog.compile_catalog(library)
    expected = catalog.load_catalog(library)
    no_source_validation(monkeypatch)
    loaded = catalog.load_catalog(library)
    assert sorted(loaded.runbooks) == sorted(expected.runbooks)
    assert sorted(loaded.partners) == sorted(expected.partners)


def test_touching_files_without_changing_them_keeps_the_compiled_catalog(monkeypatch, library):
    compiled = catalog.compile_catalog(library)
    for path in library_files(library):
        os.utime(path, (1, 1))
    assert catalog.compiled_path(library) == compiled
    no_source_validation(monkeypatch)
    catalog.load_catalog(library)


@pytest.mark.parametrize(
    "name",
    [p.relative_to(SHIPPED).as_posix() for p in library_files(SHIPPED)],
)
def test_editing_any_library_file_makes_the_loader_validate_from_source(monkeypatch, library, name):
    compiled = catalog.compile_catalog(library)
    edit(library / name)
    assert catalog.compiled_path(library) != compiled, "the fingerprint covers the file"
    validated = []
    real = catalog._validated
    monkeypatch.setattr(catalog, "_validated", lambda root: validated.append(root) or real(root))
    catalog.load_catalog(library)
    assert validated == [library.resolve()]


def test_an_edited_runbook_is_loaded_as_edited_not_from_the_stale_pickle(library):
    catalog.compile_catalog(library)
    throttle = library / "throttle.yaml"
    throttle.write_text(
        throttle.read_text().replace("title: Throttled requests on a partner table", "title: Edited")
    )
    assert catalog.load_catalog(library).runbooks["throttle"].title == "Edited"


def test_a_runbook_broken_after_compiling_fails_the_load_instead_of_using_the_pickle(library):
    catalog.compile_catalog(library)
    throttle = library / "throttle.yaml"
    throttle.write_text(
        throttle.read_text().replace("action: dynamodb.hot_keys", "action: dynamodb.teleport")
    )
    with pytest.raises(CatalogError) as raised:
        catalog.load_catalog(library)
    assert any(
        p.startswith(f"{throttle.resolve()}:") and "dynamodb.teleport" in p for p in raised.value.problems
    )


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_adding_removing_or_renaming_a_runbook_invalidates_the_compiled_catalog(library, change):
    def runbook(name: str) -> str:
        return f"name: {name}\ntitle: T\nsteps:\n  - {{id: a, action: notify, inputs: {{text: hi}}}}\n"

    (library / "extra.yaml").write_text(runbook("extra"))
    compiled = catalog.compile_catalog(library)
    if change == "add":
        (library / "another.yaml").write_text(runbook("another"))
    elif change == "remove":
        (library / "extra.yaml").unlink()
    else:
        (library / "extra.yaml").unlink()
        (library / "extra-two.yaml").write_text(runbook("extra-two"))
    assert catalog.compiled_path(library) != compiled
    names = set(catalog.load_catalog(library).runbooks)
    assert {"another", "extra", "extra-two"} & names == {
        "add": {"another", "extra"},
        "remove": set(),
        "rename": {"extra-two"},
    }[change]


def test_a_compiled_file_that_is_not_a_catalog_is_ignored(library):
    target = catalog.compiled_path(library)
    target.parent.mkdir()
    target.write_bytes(pickle.dumps({"runbooks": {}}))
    assert "throttle" in catalog.load_catalog(library).runbooks


def test_validate_compile_writes_the_catalog_only_for_a_valid_library(capsys, library):
    status, problems = cli_validate(capsys, library, compile=True)
    assert (status, problems) == (0, [])
    assert (library / ".compiled").is_dir() and catalog.compiled_path(library).is_file()
    shutil.rmtree(library / ".compiled")
    write_runbook(library, "cycle")
    status, _ = cli_validate(capsys, library, compile=True)
    assert status == 1
    assert not (library / ".compiled").exists(), "a library with problems is never compiled"
