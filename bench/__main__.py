"""`python -m bench`: run the benchmarks, print one table, write the figures as JSON.

    python -m bench                      # every benchmark -> bench/results/latest.json
    python -m bench --only scheduler     # some of them
    python -m bench --smoke              # tiny sizes, checks the harness -> smoke.json

Exits 0 when every benchmark ran, whether or not its goals were met (the table says
PASS or MISS), or could not run here for want of a bench-only package (it says which,
and what to install); 1 when a benchmark failed (its error and traceback are printed
where it ran, and the other benchmarks still run and their figures are written); 2 for
a bad command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.registry import BENCHMARKS, Benchmark, short_name
from bench.report import Goal, Unavailable, format_table, summarize, write_results

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None, benchmarks: Sequence[Benchmark] = BENCHMARKS) -> int:
    """Run the chosen benchmarks (of `benchmarks`: every one by default); return the exit
    status."""
    names = [short_name(benchmark) for benchmark in benchmarks]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"run only these: {names}"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the harness, figures mean nothing"
    )
    parser.add_argument(
        "--output", type=Path, help="JSON file to write (default: bench/results/latest.json)"
    )
    args = parser.parse_args(argv)
    chosen = [b for b in benchmarks if args.only is None or short_name(b) in args.only]
    output: Path = args.output or RESULTS_DIR / ("smoke.json" if args.smoke else "latest.json")

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    figures: dict[str, float] = {}
    goals: list[Goal] = []
    skipped: list[str] = []
    failed: list[str] = []
    for benchmark in chosen:
        started = time.perf_counter()
        print(f"running {short_name(benchmark)}...", flush=True)
        try:
            new = benchmark.run(args.smoke)
        except Unavailable as exc:
            print(f"  skipped: {exc}", flush=True)
            skipped.append(short_name(benchmark))
            continue
        except Exception as exc:
            # One benchmark's failure must not cost the figures of those measured
            # before it and after it (a run takes half an hour).
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
            failed.append(short_name(benchmark))
            continue
        _merge(figures, new, benchmark)
        goals.extend(benchmark.GOALS)
        print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)

    print()
    print(format_table(figures, goals))
    print()
    print(summarize(figures, goals))
    if skipped:
        print(f"skipped (see above): {', '.join(skipped)}")
    if failed:
        print(f"FAILED (see above): {', '.join(failed)}")
    write_results(output, figures)
    print(f"figures written to {output}")
    return 1 if failed else 0


def _merge(figures: dict[str, float], new: dict[str, float], benchmark: Benchmark) -> None:
    # One flat namespace across benchmarks: a clash would silently drop a figure.
    clashes = sorted(figures.keys() & new.keys())
    if clashes:
        raise RuntimeError(f"{benchmark.__name__} repeats figure names: {', '.join(clashes)}")
    figures.update(new)


if __name__ == "__main__":
    sys.exit(main())
