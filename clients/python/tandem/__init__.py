"""Tandem's Python package: the generated `tandem.v1` stubs, the client and the CLI."""
