"""Goals for figures, the table that shows them, and the JSON file that keeps them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Goal", "Unavailable", "format_table", "format_value", "summarize", "write_results"]


class Unavailable(RuntimeError):
    """A benchmark cannot run here (a bench-only package is missing); the message says
    what to install. The runner reports it and goes on with the other benchmarks."""


@dataclass(frozen=True)
class Goal:
    """A bound that one figure should meet: `figure >= minimum` or `figure <= maximum`."""

    figure: str
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if (self.minimum is None) == (self.maximum is None):
            raise ValueError(f"goal for {self.figure!r} needs exactly one of minimum, maximum")

    def met(self, value: float) -> bool:
        """Whether `value` meets the goal (NaN never does)."""
        if self.minimum is not None:
            return value >= self.minimum
        assert self.maximum is not None
        return value <= self.maximum

    def describe(self) -> str:
        """The goal as people read it: ">= 50,000" or "<= 2"."""
        if self.minimum is not None:
            return f">= {format_value(self.minimum)}"
        assert self.maximum is not None
        return f"<= {format_value(self.maximum)}"


def format_value(value: float) -> str:
    """Large figures with thousands separators and no decimals, small ones with two."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def format_table(figures: Mapping[str, float], goals: Sequence[Goal]) -> str:
    """One row per figure: name, value, its goal if it has one, and PASS or MISS."""
    by_figure = {goal.figure: goal for goal in goals}
    rows = [("figure", "value", "goal", "result")]
    for name, value in figures.items():
        goal = by_figure.get(name)
        if goal is None:
            rows.append((name, format_value(value), "", ""))
        else:
            rows.append((name, format_value(value), goal.describe(), _verdict(goal, value)))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for name_text, value_text, goal_text, verdict in rows:
        line = (
            f"{name_text:<{widths[0]}}  {value_text:>{widths[1]}}  "
            f"{goal_text:<{widths[2]}}  {verdict}"
        )
        lines.append(line.rstrip())
    return "\n".join(lines)


def summarize(figures: Mapping[str, float], goals: Sequence[Goal]) -> str:
    """One line: how many goals passed and which were missed."""
    checked = [goal for goal in goals if goal.figure in figures]
    missed = [goal.figure for goal in checked if not goal.met(figures[goal.figure])]
    line = f"goals: {len(checked) - len(missed)} PASS, {len(missed)} MISS"
    return f"{line} ({', '.join(missed)})" if missed else line


def _verdict(goal: Goal, value: float) -> str:
    return "PASS" if goal.met(value) else "MISS"


def write_results(path: Path, figures: Mapping[str, float]) -> None:
    """Write `figures` to `path` as one flat JSON object, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # allow_nan=False: a NaN or inf figure is a harness bug, not a number to keep.
    text = json.dumps(dict(figures), indent=2, allow_nan=False) + "\n"
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
