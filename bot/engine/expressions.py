"""The runbooks' expression language: `{{ expr }}` over params, partner, steps and execution.

Built on simpleeval (a maintained, sandboxed evaluator over Python's own parser) with tighter
rules: dotted access works only as a key lookup on mappings (`steps.detect.outputs.x`), never
as attribute access on objects, so no method or dunder is reachable; only a handful of pure
functions exist; sizes of strings and powers are bounded. Nothing is ever passed to `eval`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

import simpleeval

from bot.exceptions import RunbookBotError

MAX_EXPRESSION = 1000
MAX_ITEMS = 10_000  # the largest list or tuple an expression may build
MAX_INT_BITS = 1_024  # the largest whole number an expression may make (about 10**308)
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
FUNCTIONS = {
    "len": len,
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "abs": abs,
    "sum": lambda values, start=0: _sum(values, start),
    "any": any,
    "all": all,
    "bool": bool,
}


class ExpressionError(RunbookBotError):
    """An expression that cannot be evaluated; the message says where and what is available."""


def _sum(values: Any, start: Any = 0) -> Any:
    """sum() of numbers only: summing lists is quadratic and would let a short expression hang."""
    items = list(values)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in [*items, start]):
        raise ExpressionError("sum() adds numbers only")
    return sum(items, start)


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        raise ExpressionError("`%` formatting of text is not available; join text with + and str()")
    return left % right


def _mult(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, list | tuple) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_ITEMS:
            raise ExpressionError(f"a list of more than {MAX_ITEMS:,} items is not available")
    if _whole(left) and _whole(right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
        raise simpleeval.NumberTooHigh(_TOO_BIG)
    return simpleeval.safe_mult(left, right)


_TOO_BIG = f"a whole number above 2**{MAX_INT_BITS} is not available; runbooks count items and units"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pow(base: Any, exponent: Any) -> Any:
    """Powers whose result stays a sensible size: 9**4000000 would take seconds to even multiply."""
    if _whole(base) and _whole(exponent) and exponent > 0 and abs(base) > 1:
        if abs(base).bit_length() * exponent > MAX_INT_BITS + 64:
            raise simpleeval.NumberTooHigh(_TOO_BIG)
    elif isinstance(exponent, int | float) and abs(exponent) > MAX_INT_BITS:
        raise simpleeval.NumberTooHigh(f"an exponent above {MAX_INT_BITS} is not available")
    return base**exponent


def _lshift(value: Any, shift: Any) -> Any:
    if _whole(value) and _whole(shift) and abs(value).bit_length() + shift > MAX_INT_BITS:
        raise simpleeval.NumberTooHigh(_TOO_BIG)
    return value << shift


class _Evaluator(simpleeval.EvalWithCompoundTypes):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            operators={
                **simpleeval.DEFAULT_OPERATORS,
                ast.Mod: _mod,
                ast.Mult: _mult,
                ast.Pow: _pow,
                ast.LShift: _lshift,
            },
            **kwargs,
        )

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise ExpressionError(f"`{node.attr}`: names starting with _ are not available")
        base = self._eval(node.value)
        if isinstance(base, Mapping):
            if node.attr in base:
                return base[node.attr]
            known = ", ".join(sorted(map(str, base))) or "nothing"
            raise ExpressionError(f"`{_source(node)}` does not exist; available here: {known}")
        raise ExpressionError(
            f"`.{node.attr}`: dotted access works on mappings only, not on {type(base).__name__}"
        )

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        base = self._eval(node.value)
        key = self._eval(node.slice)
        try:
            return base[key]
        except (KeyError, IndexError, TypeError):
            if isinstance(base, Mapping):
                known = ", ".join(sorted(map(str, base))) or "nothing"
            else:
                known = f"{len(base)} items" if hasattr(base, "__len__") else type(base).__name__
            raise ExpressionError(f"`{_source(node)}`: no entry {key!r}; available: {known}") from None

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in {"true", "True"}:
            return True
        if node.id in {"false", "False"}:
            return False
        if node.id in {"null", "None"}:
            return None
        known = ", ".join(sorted(self.names)) or "nothing"
        raise ExpressionError(f"`{node.id}` is not defined; expressions can use {known}")


def evaluate(expression: str, scope: Mapping[str, Any]) -> Any:
    text = expression.strip()
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"expression is {len(text)} characters long; at most {MAX_EXPRESSION}")
    if not text:
        raise ExpressionError("empty expression")
    try:
        ast.parse(text, mode="eval")  # one expression: no statements, no `a = b` typed for `a == b`
    except SyntaxError as error:
        problem = _statement_problem(text, error)
        raise ExpressionError(f"`{text}`{' ' if problem.startswith('is ') else ': '}{problem}") from None
    evaluator = _Evaluator(names=dict(scope), functions=FUNCTIONS)
    try:
        return evaluator.eval(text)
    except ExpressionError:
        raise
    except simpleeval.OperatorNotDefined as error:
        op = type(getattr(error, "attr", None)).__name__
        raise ExpressionError(
            f"`{text}`: the operator {_OPERATOR_NAMES.get(op, op)} is not available"
        ) from None
    except SyntaxError as error:
        raise ExpressionError(
            f"`{text}` is not a valid expression: {error.msg} at column {error.offset}"
        ) from None
    except simpleeval.InvalidExpression as error:
        raise ExpressionError(f"`{text}`: {error}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as error:
        raise ExpressionError(f"`{text}`: {type(error).__name__}: {error}") from None


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Templated inputs: strings with {{ }} are evaluated; a lone {{ expr }} keeps its type."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
            return evaluate(stripped[2:-2], scope)
        if "{{" not in value:
            return value
        return TEMPLATE.sub(lambda m: _text(evaluate(m.group(1), scope)), value)
    if isinstance(value, Mapping):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, scope) for v in value]
    return value


def expressions_in(value: Any) -> list[str]:
    """Every expression inside a templated value (for validation)."""
    if isinstance(value, str):
        return [m.group(1) for m in TEMPLATE.finditer(value)]
    if isinstance(value, Mapping):
        return [e for v in value.values() for e in expressions_in(v)]
    if isinstance(value, list | tuple):
        return [e for v in value for e in expressions_in(v)]
    return []


def references(expression: str) -> set[tuple[str, ...]]:
    """Static paths an expression reads, e.g. ('steps', 'detect', 'outputs', 'x'); SyntaxError if bad."""
    tree = ast.parse(expression.strip(), mode="eval")
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Name):
            path = _path(node)
            if path:
                found.add(path)
    # Keep only the longest paths (drop their prefixes, which ast.walk also visits).
    return {p for p in found if not any(q != p and q[: len(p)] == p for q in found)}


def _path(node: ast.AST) -> tuple[str, ...] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            parts.append(str(node.slice.value))
            node = node.value
        elif isinstance(node, ast.Subscript):
            parts.clear()  # a computed key: only the part before it is static
            node = node.value
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS or node.id in {"true", "false", "null", "True", "False", "None"}:
                return None
            parts.append(node.id)
            return tuple(reversed(parts))
        else:
            return None


def _statement_problem(text: str, error: SyntaxError) -> str:
    """Say what a non-expression is: statements get their own refusal, typos their syntax error."""
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return f"is not a valid expression: {error.msg} at column {error.offset}"
    if len(body) > 1:
        return f"one expression only, not {len(body)} statements"
    node = body[0] if body else None
    if isinstance(node, ast.Import | ast.ImportFrom):
        return "'import' is not allowed"
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        return "`=` assigns, it does not compare; write `==`"
    if node is None:
        return "empty expression"
    shown: ast.AST = node.value if isinstance(node, ast.Expr) else node  # e.g. `yield 1`
    return f"{type(shown).__name__} is not available"


_OPERATOR_NAMES = {"MatMult": "@", "BitAnd": "&", "BitOr": "|", "BitXor": "^", "Invert": "~"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return "" if value is None else str(value)
    except ValueError as error:  # e.g. an integer too long to print
        raise ExpressionError(f"the value cannot be written as text: {error}") from None


def _source(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # unparse of a partial tree: the message still helps without it
        return "expression"
