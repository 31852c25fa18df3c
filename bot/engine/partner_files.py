"""Partner files → validated `Partner`s, every problem as `file:line: message`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.engine.schemas import schema_problems
from bot.engine.yamlfile import YamlDoc, YamlProblem, load_yaml
from bot.exceptions import CatalogError, RunbookBotError
from bot.partners.model import (
    DRILL_STORE,
    MAX_QUORUM,
    RISK_LEVELS,
    AlarmMapping,
    CapacityLimits,
    FailedRequestStore,
    KeyAttribute,
    Partner,
    PartnerIndex,
    PartnerTable,
    Sla,
)


def load_partner(path: Path, runbooks: Mapping[str, Any] | None = None) -> Partner:
    try:
        doc = load_yaml(path)
    except YamlProblem as problem:
        raise CatalogError([str(problem)]) from None
    problems = check_partner(doc, runbooks)
    if problems:
        raise CatalogError(problems)
    return to_partner(doc)


def check_partner(doc: YamlDoc, runbooks: Mapping[str, Any] | None = None) -> list[str]:
    problems = schema_problems(doc, "partner.schema.json")
    if problems or not isinstance(doc.data, dict):
        return problems or [
            f"{doc.path}:1: a partner file is a mapping (name, region, tables, approvers, ...)"
        ]
    data = doc.data

    def problem(path: tuple[Any, ...], message: str) -> None:
        problems.append(f"{doc.path}:{doc.line_of(path)}: {message}")

    stem = Path(doc.path).stem
    if data["name"] != stem:
        problem(("name",), f"name `{data['name']}` must match the file name `{stem}`")
    tables = data["tables"]
    store = data.get("failed_requests")
    if store and store["target_table"] not in tables:
        problem(
            ("failed_requests", "target_table"),
            f"failed_requests.target_table `{store['target_table']}` is not a table alias ({', '.join(tables)})",
        )
    _check_drill_targets(data, problem)
    _check_approvals(data, problem)
    _check_guard_alarms(data, problem)
    drill = data.get("drill") or {}
    if "faults" in drill:
        from bot.partners.faults import FaultSpec

        try:
            FaultSpec.parse(str(drill["faults"]))
        except RunbookBotError as error:
            problem(("drill", "faults"), str(error))
    if "time_limit" in drill:
        from bot.engine.durations import parse_duration

        try:
            parse_duration(drill["time_limit"])
        except (RunbookBotError, ValueError) as error:
            problem(("drill", "time_limit"), f"drill.time_limit: {error}")
    if runbooks is not None:
        for i, alarm in enumerate(data.get("alarms") or []):
            if alarm["runbook"] not in runbooks:
                problem(
                    ("alarms", i, "runbook"),
                    f"alarm mapping names runbook `{alarm['runbook']}`; runbooks: {', '.join(sorted(runbooks))}",
                )
        for name, overrides in (data.get("overrides") or {}).items():
            runbook = runbooks.get(name)
            if runbook is None:
                problem(("overrides", name), f"overrides name runbook `{name}`, which does not exist")
                continue
            known = {p.name: p for p in runbook.parameters}
            for param, value in overrides.items():
                if param not in known:
                    problem(
                        ("overrides", name, param),
                        f"runbook `{name}` has no parameter `{param}` ({', '.join(known) or 'none'})",
                    )
                    continue
                from bot.engine.params import check_partner_value, coerce, within_limit

                try:
                    typed = coerce(known[param], value)
                    if not problems:  # the partner is whole enough to check against
                        partner = to_partner(doc)
                        check_partner_value(known[param], typed, partner)
                        within_limit(known[param], typed, partner, lower=False)
                except ValueError as error:
                    problem(("overrides", name, param), f"override `{name}.{param}`: {error}")
    return problems


def _check_guard_alarms(data: dict[str, Any], problem: Any) -> None:
    """`guard_alarms: [acme-*-latency]`: alarm names or patterns that name some alarms, not all."""
    from bot.actions.guard import guard_pattern_problem

    for i, pattern in enumerate(data.get("guard_alarms") or ()):
        message = guard_pattern_problem(pattern)
        if message:
            problem(("guard_alarms", i), message)


def _check_approvals(data: dict[str, Any], problem: Any) -> None:
    """`approvals: {high: 1, critical: 2}`: a whole number of distinct approvers per risk level,
    at least 1, at most MAX_QUORUM, no more than the approvers the file names can give, and
    critical never below high."""
    if "approvals" not in data:
        return
    approvals = data["approvals"]
    levels = ", ".join(RISK_LEVELS)
    if not isinstance(approvals, dict) or not approvals:
        problem(
            ("approvals",),
            f"approvals maps risk levels ({levels}) to how many distinct approvers each needs, "
            "e.g. `approvals: {high: 1, critical: 2}`",
        )
        return
    approvers = list(data.get("approvers") or [])
    users = {a for a in approvers if not str(a).startswith("S")}
    groups = len(approvers) - len(users)
    valid: dict[str, int] = {}
    for level, count in approvals.items():
        where = ("approvals", level)
        if level not in RISK_LEVELS:
            problem(where, f"approvals names risk level `{level}`; risk levels: {levels}")
            continue
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_QUORUM:
            problem(
                where,
                f"approvals.{level} is `{count}`; it must be a whole number of distinct approvers "
                f"from 1 to {MAX_QUORUM}",
            )
            continue
        if not groups and count > len(users):
            problem(
                where,
                f"approvals.{level} asks for {count} distinct approvers but `approvers` names only "
                f"{len(users)} ({', '.join(sorted(users))}); name more approvers (or a user group) "
                "or lower the number",
            )
            continue
        valid[level] = count
    if "high" in valid and "critical" in valid and valid["critical"] < valid["high"]:
        problem(
            ("approvals", "critical"),
            f"approvals.critical ({valid['critical']}) is below approvals.high ({valid['high']}); a "
            "critical change needs at least as many approvers as a high-risk one",
        )


def _check_drill_targets(data: dict[str, Any], problem: Any) -> None:
    """A drill must resolve every table and the store to a resource of its own, never production."""
    tables, store = data["tables"], data.get("failed_requests")
    targets = data.get("drill_target") or {}
    production = {t["name"] for t in tables.values()} | ({store["name"]} if store else set())
    if DRILL_STORE in tables:
        problem(
            ("tables", DRILL_STORE),
            f"`{DRILL_STORE}` is reserved for the store's drill target; rename the alias",
        )
    valid = [*tables, *([DRILL_STORE] if store else [])]
    for key, target in targets.items():
        if key not in valid:
            problem(("drill_target", key), f"drill_target names `{key}`; valid keys: {', '.join(valid)}")
        elif target in production:
            problem(
                ("drill_target", key),
                f"drill_target `{key}` is `{target}`, a production resource; a drill needs its own",
            )
    if targets:
        missing = [key for key in valid if not targets.get(key)]
        if missing:
            problem(
                ("drill_target",),
                f"drill_target must cover every table alias and the failed-request store; missing: "
                f"{', '.join(missing)} (a drill must never fall back to production)",
            )


def to_partner(doc: YamlDoc) -> Partner:
    d = doc.data

    def key(k: dict[str, str] | None) -> KeyAttribute | None:
        return KeyAttribute(k["name"], k["type"]) if k else None

    tables = {
        alias: PartnerTable(
            alias,
            t["name"],
            KeyAttribute(t["partition_key"]["name"], t["partition_key"]["type"]),
            key(t.get("sort_key")),
            tuple(
                PartnerIndex(
                    i["name"],
                    KeyAttribute(i["partition_key"]["name"], i["partition_key"]["type"]),
                    key(i.get("sort_key")),
                )
                for i in t.get("indexes") or []
            ),
        )
        for alias, t in d["tables"].items()
    }
    store = d.get("failed_requests")
    sla = d["sla"]
    return Partner(
        name=d["name"],
        display_name=d["display_name"],
        region=d["region"],
        account_id=str(d["account_id"]),
        role_arn=d.get("role_arn", ""),
        sla=Sla(int(sla["response_minutes"]), int(sla["resolution_minutes"]), float(sla.get("warn_at", 0.8))),
        channels=tuple(d.get("channels") or ()),
        approvers=tuple(d["approvers"]),
        tables=tables,
        failed_requests=FailedRequestStore(store["kind"], store["name"], store["target_table"])
        if store
        else None,
        capacity=CapacityLimits(**(d.get("capacity") or {})),
        alarms=tuple(
            AlarmMapping(a["pattern"], a["runbook"], dict(a.get("params") or {}))
            for a in d.get("alarms") or []
        ),
        overrides={k: dict(v) for k, v in (d.get("overrides") or {}).items()},
        approval_timeout_minutes=int(d.get("approval_timeout_minutes", 30)),
        approvals={str(k): int(v) for k, v in (d.get("approvals") or {}).items()},
        guard_alarms=tuple(d.get("guard_alarms") or ()),
        drill_target=dict(d.get("drill_target") or {}),
        **_drill_settings(d.get("drill") or {}),
        source=doc.path,
    )


def _drill_settings(drill: dict[str, Any]) -> dict[str, Any]:
    from bot.engine.durations import parse_duration

    settings: dict[str, Any] = {}
    if "faults" in drill:
        settings["drill_faults"] = str(drill["faults"])
    if "time_limit" in drill:
        settings["drill_time_limit_seconds"] = parse_duration(drill["time_limit"])
    return settings
