"""Benchmarks (docs/benchmarks.md): scripts run as `python benchmarks/NAME.py`, and the load
benchmark, a package run as `python -m benchmarks.load`."""
