"""A small evaluator for Azure Batch autoscale formulas, enough to run ours against sample histories.

It implements the part of the documented formula language our formula uses
(https://learn.microsoft.com/azure/batch/batch-automatic-scaling):
statements ``name = expr;``, ``//`` comments, ``+ - * /``, comparisons,
``cond ? a : b``, ``max min avg ceil floor`` over numbers and sample
vectors, ``TimeInterval_*`` constants, and ``$PendingTasks`` /
``$ActiveTasks`` / ``$RunningTasks`` with ``GetSample(count)``,
``GetSample(interval)`` and ``GetSamplePercent(interval)``. Anything else
(an unknown name, function or token) is an error, as the service would
reject the formula. Branches of ``?:`` are both evaluated; an aggregate of
no samples is undefined, an error only if a variable ends up undefined. It is a test fixture: the service itself is the judge
of the full language.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["FormulaError", "Samples", "evaluate"]

SAMPLE_SECONDS = 30  # the service samples task counts every 30 s
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|==|!=|[-+*/<>?:;=(),.]))")
_INTERVALS = {"TimeInterval_Second": 1, "TimeInterval_Minute": 60, "TimeInterval_Hour": 3600, "TimeInterval_Day": 86400}
_DEALLOCATION = ("requeue", "terminate", "taskcompletion", "retaineddata")
_SYSTEM = ("$PendingTasks", "$ActiveTasks", "$RunningTasks")  # read-only metrics


class FormulaError(ValueError):
    """The formula uses something the language (or this evaluator) does not have."""


@dataclass(frozen=True)
class Interval:
    seconds: float


@dataclass(frozen=True)
class Samples:
    """A metric's history, newest first, one value per ``SAMPLE_SECONDS``."""

    values: tuple[float, ...] = field(default_factory=tuple)

    def get_sample(self, arg: float | Interval) -> list[float]:
        count = math.ceil(arg.seconds / SAMPLE_SECONDS) if isinstance(arg, Interval) else int(arg)
        return list(self.values[:count])

    def get_sample_percent(self, arg: Interval) -> float:
        wanted = max(1, math.ceil(arg.seconds / SAMPLE_SECONDS))
        return 100.0 * min(len(self.values), wanted) / wanted


def evaluate(formula: str, samples: dict[str, Samples]) -> dict[str, object]:
    """Run ``formula`` with ``samples`` for the ``$...Tasks`` metrics; every variable it assigned."""
    text = re.sub(r"//[^\n]*", "", formula)
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise FormulaError(f"unexpected text at {text[pos:pos + 20]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return _Parser(tokens, samples).statements()


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], samples: dict[str, Samples]):
        self.tokens, self.i = tokens, 0
        self.names: dict[str, object] = {**{k: Interval(v) for k, v in _INTERVALS.items()},
                                         **{k: k for k in _DEALLOCATION}, **samples}

    def statements(self) -> dict[str, object]:
        assigned: dict[str, object] = {}
        while self.i < len(self.tokens):
            kind, name = self.tokens[self.i]
            if kind != "name" or name in _SYSTEM:
                raise FormulaError(f"cannot assign to {name!r}")
            self.i += 1
            self.expect("=")
            self.names[name] = assigned[name] = self.expr()
            self.expect(";")
        undefined = [k for k, v in assigned.items() if isinstance(v, float) and math.isnan(v)]
        if undefined:
            raise FormulaError(f"{', '.join(undefined)} undefined (an aggregate of no samples)")
        return assigned

    def expect(self, op: str) -> None:
        if self.i >= len(self.tokens) or self.tokens[self.i] != ("op", op):
            raise FormulaError(f"expected {op!r} at token {self.i}")
        self.i += 1

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) and self.tokens[self.i][0] == "op" else None

    def expr(self):
        condition = self.comparison()
        if self.peek() != "?":
            return condition
        self.i += 1
        when_true = self.expr()
        self.expect(":")
        when_false = self.expr()
        return when_true if condition else when_false

    def comparison(self):
        left = self.additive()
        op = self.peek()
        if op not in ("<", ">", "<=", ">=", "==", "!="):
            return left
        self.i += 1
        right = self.additive()
        return float({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right,
                      "==": left == right, "!=": left != right}[op])

    def additive(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i][1]
            self.i += 1
            value = value + self.term() if op == "+" else value - self.term()
        return value

    def term(self):
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.i][1]
            self.i += 1
            right = self.unary()
            if isinstance(value, Interval) or isinstance(right, Interval):
                seconds = value.seconds * right if isinstance(value, Interval) else value * right.seconds
                value = Interval(seconds if op == "*" else value.seconds / right)
            else:
                value = value * right if op == "*" else value / right
        return value

    def unary(self):
        if self.peek() == "-":
            self.i += 1
            return -self.unary()
        return self.primary()

    def primary(self):
        kind, token = self.tokens[self.i]
        self.i += 1
        if kind == "number":
            return float(token)
        if token == "(":
            value = self.expr()
            self.expect(")")
            return value
        if kind != "name":
            raise FormulaError(f"unexpected {token!r}")
        if self.peek() == "(":
            return _call(token, self.args())
        if self.peek() == ".":
            self.i += 1
            method = self.tokens[self.i][1]
            self.i += 1
            metric = self.names.get(token)
            if not isinstance(metric, Samples):
                raise FormulaError(f"{token} has no samples")
            args = self.args()
            if method == "GetSample" and len(args) == 1:
                return metric.get_sample(args[0])
            if method == "GetSamplePercent" and len(args) == 1 and isinstance(args[0], Interval):
                return metric.get_sample_percent(args[0])
            raise FormulaError(f"unsupported method {token}.{method}")
        if token not in self.names:
            raise FormulaError(f"unknown name {token!r}")
        return self.names[token]

    def args(self) -> list:
        self.expect("(")
        args = [self.expr()]
        while self.peek() == ",":
            self.i += 1
            args.append(self.expr())
        self.expect(")")
        return args


def _call(name: str, args: list):
    flat = [float(x) for a in args for x in (a if isinstance(a, list) else [a])]
    if name in ("max", "min", "avg"):
        if not flat:  # undefined; an error only if it ends up in a variable (the other branch of a ?: is fine)
            return math.nan
        return {"max": max, "min": min, "avg": lambda v: sum(v) / len(v)}[name](flat)
    if name in ("ceil", "floor") and len(flat) == 1:
        if math.isnan(flat[0]):
            return math.nan
        return float(math.ceil(flat[0]) if name == "ceil" else math.floor(flat[0]))
    raise FormulaError(f"unknown function {name}")
