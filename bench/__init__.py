"""Tandem's benchmarks: how fast the parts are, measured the same way every time.

Each benchmark is one module here with a `run(smoke: bool) -> dict[str, float]`
function and a `GOALS` tuple (`bench.report.Goal`), and is listed once in
`bench.registry.BENCHMARKS`. `make bench` (`python -m bench`) runs them all, prints
one table of figures with each goal and PASS or MISS, and writes every figure to
`bench/results/latest.json` as one flat JSON object (figure name -> number). The
results folder is git-ignored: figures belong to a machine and a day, so the ones
worth keeping are copied into `bench/README.md` with the date and the machine.

Figure names are unique across benchmarks and carry their unit (`..._per_s`,
`..._ms`, `..._x`...) or say what they compare. `smoke=True` runs the same code on
tiny sizes in a second or two: it checks the harness, its figures mean nothing
(`python -m bench --smoke` writes them to `bench/results/smoke.json`).

Timings belong here, never in tests; the tests only check that each benchmark runs
(`tests/bench_smoke/`).
"""
