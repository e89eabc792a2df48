"""The list of benchmarks that `python -m bench` runs, and what a benchmark must offer.

To add one (training throughput, predict latency, dispatch, log fan-out...), write a
module in bench/ with a `run(smoke: bool) -> dict[str, float]` function and a `GOALS`
tuple, import it here and append it to `BENCHMARKS`. The module may import heavy
packages (torch) at its top: only the runner and the smoke tests import this list. A
bench-only package (Ray Serve) is imported inside `run`, which raises
`bench.report.Unavailable` without it, so that this list loads everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bench import (
    dispatch,
    isolation,
    load,
    logs,
    oip,
    predict,
    ray_executor,
    ray_serve,
    recipe,
    scaling,
    scheduler,
    throughput,
)
from bench.report import Goal

__all__ = ["BENCHMARKS", "Benchmark", "short_name"]


class Benchmark(Protocol):
    """A benchmark module: its figures and the goals some of them should meet."""

    @property
    def __name__(self) -> str: ...

    @property
    def GOALS(self) -> Sequence[Goal]:
        """Bounds that some of the figures should meet (none is fine)."""
        ...

    def run(self, smoke: bool) -> dict[str, float]:
        """Measure; return figure name -> value. `smoke`: tiny sizes, seconds at most."""
        ...


# In the order they run and are printed: the quick ones first.
BENCHMARKS: tuple[Benchmark, ...] = (
    scheduler,
    dispatch,
    logs,
    predict,
    oip,
    ray_executor,
    ray_serve,
    isolation,
    throughput,
    recipe,
    scaling,
    # Minutes at full size (1,000 tasks): last, so the quick figures come first.
    load,
)


def short_name(benchmark: Benchmark) -> str:
    """The name used on the command line: the module's name without `bench.`."""
    return benchmark.__name__.rpartition(".")[2]
