"""Benchmarks: programs that start their own local peers, measure, and print their figures.

Run one from the repository root, e.g. ``.venv/bin/python -m bench.audit_append``; the figures seen so far
are in docs/benchmarks.md.
"""
