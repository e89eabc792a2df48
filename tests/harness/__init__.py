"""Harnesses that start a real Tandem server for tests and benchmarks: `ServerThread`
(the service on a background event loop, in this process) and `ServedProcess`
(`tandem serve` as a child). Beside the tests, so the product never imports them."""
