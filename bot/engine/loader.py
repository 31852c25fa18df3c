"""Runbook files → validated `Runbook`s. Every problem is `file:line: message`, all at once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.engine.durations import parse_duration
from bot.engine.expressions import expressions_in, references
from bot.engine.model import Parameter, ParamType, RetryPolicy, Risk, Runbook, Step
from bot.engine.schemas import schema_problems
from bot.engine.yamlfile import YamlDoc, YamlProblem, load_yaml
from bot.exceptions import CatalogError

SCOPES = {"params", "partner", "steps", "execution"}
RISKY = {r.value for r in Risk if r.asks_approval}  # the levels an always-risky action may declare


def load_runbook(path: Path, actions: Mapping[str, Any]) -> Runbook:
    """A validated runbook, or CatalogError listing every problem of the file."""
    try:
        doc = load_yaml(path)
    except YamlProblem as problem:
        raise CatalogError([str(problem)]) from None
    problems = check_runbook(doc, actions)
    if problems:
        raise CatalogError(problems)
    return to_runbook(doc, Path(path).read_bytes())


def check_runbook(doc: YamlDoc, actions: Mapping[str, Any]) -> list[str]:
    problems = schema_problems(doc, "schema.json")
    if problems or not isinstance(doc.data, dict):
        return problems or [f"{doc.path}:1: a runbook is a mapping with name, title and steps"]
    data = doc.data
    at = doc.line_of

    def problem(path: tuple[Any, ...], message: str) -> None:
        problems.append(f"{doc.path}:{at(path)}: {message}")

    stem = Path(doc.path).stem
    if data["name"] != stem:
        problem(("name",), f"name `{data['name']}` must match the file name `{stem}`")

    params = data.get("parameters") or {}
    for name, spec in params.items():
        try:
            if spec.get("default") is not None:
                _check_default(name, spec)
        except ValueError as error:
            problem(("parameters", name, "default"), f"default of `{name}`: {error}")
        if spec["type"] == "enum" and not spec.get("values"):
            problem(("parameters", name), f"enum parameter `{name}` needs `values`")

    paths = {"steps": data["steps"], "on_failure": data.get("on_failure") or []}
    all_steps = [(kind, i, s) for kind, steps in paths.items() for i, s in enumerate(steps)]
    ids: dict[str, tuple[str, int]] = {}
    for kind, i, step in all_steps:
        if step["id"] in ids:
            problem((kind, i, "id"), f"step id `{step['id']}` is used twice")
        ids.setdefault(step["id"], (kind, i))

    order = {s["id"]: n for n, (_, _, s) in enumerate(all_steps)}
    for kind, i, step in all_steps:
        here = (kind, i)
        action = actions.get(step["action"])
        if action is None:
            problem(
                (*here, "action"), f"unknown action `{step['action']}`; known: {', '.join(sorted(actions))}"
            )
        else:
            _check_inputs(step, action, doc, here, problems)
            _check_guard(step, action, (*here, "guard_alarms"), problem, actions)
            if getattr(action, "always_high_risk", False) and step.get("risk") not in RISKY:
                problem(
                    (*here, "risk"),
                    f"`{step['action']}` changes partner data or capacity: set `risk: high` "
                    "(or `risk: critical` for the partner's critical quorum)",
                )
        targets = [step.get("next")] if step.get("next") else []
        if str(step.get("on_failure", "")).startswith("step:"):
            targets.append(step["on_failure"][5:])
        for target in targets:
            if target not in ids:
                problem(here, f"step `{step['id']}` goes to `{target}`, which does not exist")
        texts = [*expressions_in(step.get("inputs") or {}), *([step["when"]] if step.get("when") else [])]
        for text in texts:
            expr = text.strip()
            if expr.startswith("{{") and expr.endswith("}}"):
                expr = expr[2:-2]
            try:
                refs = references(expr)
            except SyntaxError as error:
                problem(
                    here, f"step `{step['id']}`: `{expr.strip()}` is not a valid expression ({error.msg})"
                )
                continue
            for ref in refs:
                message = _reference_problem(ref, step["id"], params, ids, order, all_steps, actions)
                if message:
                    problem(here, f"step `{step['id']}`: {message}")

    # With a repeated id the step graph is ambiguous: that problem comes first.
    return problems + (_graph_problems(doc, paths, ids) if len(ids) == len(all_steps) else [])


def to_runbook(doc: YamlDoc, raw: bytes) -> Runbook:
    data = doc.data
    params = tuple(
        Parameter(
            name=name,
            type=ParamType(spec["type"]),
            description=spec.get("description", ""),
            default=spec.get("default"),
            required=bool(spec.get("required", False)),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
            pattern=spec.get("pattern"),
            values=tuple(spec.get("values") or ()),
            max_length=int(spec.get("max_length", 256)),
            refers_to=spec.get("refers_to", ""),
            partner_limit=spec.get("partner_limit", ""),
        )
        for name, spec in (data.get("parameters") or {}).items()
    )

    def step(kind: str, i: int, s: dict[str, Any]) -> Step:
        retry = s.get("retry") or {}
        return Step(
            id=s["id"],
            action=s["action"],
            title=s.get("title", ""),
            inputs=s.get("inputs") or {},
            when=s.get("when"),
            retry=RetryPolicy(
                int(retry.get("max_attempts", 1)),
                float(retry.get("base_seconds", 1.0)),
                float(retry.get("max_seconds", 30.0)),
                tuple(retry.get("codes") or ()),
            ),
            timeout_seconds=int(s.get("timeout_seconds", 300)),
            risk=Risk(s.get("risk", "low")),
            on_failure=s.get("on_failure", "abort"),
            is_critical=bool(s.get("is_critical", True)),
            next=s.get("next"),
            is_end=bool(s.get("is_end", False)),
            guard_alarms=tuple(s.get("guard_alarms") or ()),
            line=doc.line_of((kind, i)),
        )

    return Runbook(
        name=data["name"],
        title=data["title"],
        description=data.get("description", ""),
        parameters=params,
        steps=tuple(step("steps", i, s) for i, s in enumerate(data["steps"])),
        on_failure=tuple(step("on_failure", i, s) for i, s in enumerate(data.get("on_failure") or [])),
        version=hashlib.sha256(raw).hexdigest()[:12],
        source=doc.path,
    )


def _check_default(name: str, spec: dict[str, Any]) -> None:
    from bot.engine.params import coerce

    p = Parameter(
        name,
        ParamType(spec["type"]),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
        pattern=spec.get("pattern"),
        values=tuple(spec.get("values") or ()),
        max_length=int(spec.get("max_length", 256)),
    )
    coerce(p, spec["default"])
    if p.type is ParamType.DURATION:
        parse_duration(spec["default"])


def _check_inputs(
    step: dict[str, Any], action: Any, doc: YamlDoc, here: tuple[Any, ...], problems: list[str]
) -> None:
    """Static inputs against the action's schema; templated values are checked when they run."""
    from jsonschema import Draft202012Validator

    inputs = step.get("inputs") or {}
    static = {k: v for k, v in inputs.items() if not expressions_in(v)}
    schema = dict(action.inputs_schema)
    required = [r for r in schema.get("required", []) if r not in inputs]
    for name in required:
        problems.append(
            f"{doc.path}:{doc.line_of((*here, 'inputs'))}: step `{step['id']}`: "
            f"`{step['action']}` needs input `{name}`"
        )
    schema.pop("required", None)
    for error in Draft202012Validator(schema).iter_errors(static):
        path = (*here, "inputs", *error.absolute_path)
        problems.append(f"{doc.path}:{doc.line_of(path)}: step `{step['id']}` inputs: {error.message}")


def _reference_problem(
    ref: tuple[str, ...],
    step_id: str,
    params: dict[str, Any],
    ids: dict[str, Any],
    order: dict[str, int],
    all_steps: list[Any],
    actions: Mapping[str, Any],
) -> str | None:
    root = ref[0]
    if root not in SCOPES:
        return f"`{'.'.join(ref)}` refers to `{root}`; expressions can use {', '.join(sorted(SCOPES))}"
    if root == "params" and len(ref) > 1 and ref[1] not in params:
        return (
            f"`{'.'.join(ref)}`: no parameter `{ref[1]}` (parameters: {', '.join(sorted(params)) or 'none'})"
        )
    if root == "steps" and len(ref) > 1:
        target = ref[1]
        if target not in ids:
            return f"`{'.'.join(ref)}`: no step `{target}`"
        if order[target] >= order[step_id]:
            return (
                f"`{'.'.join(ref)}`: step `{target}` runs after `{step_id}`, so its outputs do not exist yet"
            )
        if len(ref) > 3 and ref[2] == "outputs":
            kind, i = ids[target]
            target_step = next(s for k, j, s in all_steps if (k, j) == (kind, i))
            action = actions.get(target_step["action"])
            outputs = tuple(getattr(action, "outputs", ()) or ()) if action else ()
            if action is not None and ref[3] not in outputs:
                return (
                    f"`{'.'.join(ref)}`: `{target_step['action']}` has no output `{ref[3]}` "
                    f"(outputs: {', '.join(outputs) or 'none'})"
                )
    return None


def _graph_problems(doc: YamlDoc, paths: dict[str, list[dict[str, Any]]], ids: dict[str, Any]) -> list[str]:
    """Cycles in next/jump edges and steps nothing reaches."""
    edges: dict[str, list[str]] = {}
    for steps in paths.values():
        for i, s in enumerate(steps):
            out = []
            if s.get("next"):
                out.append(s["next"])
            elif not s.get("is_end") and i + 1 < len(steps):
                out.append(steps[i + 1]["id"])
            if str(s.get("on_failure", "")).startswith("step:"):
                out.append(s["on_failure"][5:])
            edges[s["id"]] = [t for t in out if t in ids]
    problems = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in edges.get(node, []):
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target) :], target] if target in trail else [node, target]
                kind, i = ids[node]
                problems.append(
                    f"{doc.path}:{doc.line_of((kind, i))}: steps form a cycle: {' → '.join(cycle)}"
                )
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    starts = [s["id"] for s in paths["on_failure"][:1]] + [paths["steps"][0]["id"]] if paths["steps"] else []
    for start in starts:
        if start not in state:
            visit(start, [start])
    for kind, steps in paths.items():
        for i, s in enumerate(steps):
            if s["id"] not in state:
                problems.append(
                    f"{doc.path}:{doc.line_of((kind, i))}: step `{s['id']}` is unreachable "
                    "(no step leads to it)"
                )
    return problems


def _check_guard(
    step: dict[str, Any], action: Any, where: tuple[Any, ...], problem: Any, actions: Mapping[str, Any]
) -> None:
    """`guard_alarms` on a step: only actions that pause between pages can honour them."""
    from bot.actions.guard import guard_pattern_problem

    if not step.get("guard_alarms"):
        return
    if not getattr(action, "guardable", False):
        guardable = ", ".join(sorted(n for n, a in actions.items() if getattr(a, "guardable", False)))
        problem(
            where,
            f"`{step['action']}` runs in one go, with no safe point to pause at, so it cannot be guarded; "
            f"guard_alarms is for actions that work in pages ({guardable})",
        )
    for i, pattern in enumerate(step["guard_alarms"]):
        message = guard_pattern_problem(pattern)
        if message:
            problem((*where, i), message)
