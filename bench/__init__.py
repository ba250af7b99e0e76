"""Benchmarks of the bridge against side-by-side baselines (issue 9); run `python -m bench`."""
