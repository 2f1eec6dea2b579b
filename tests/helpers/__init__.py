"""Shared test utilities: free ports, managed subprocesses, a real Prometheus server, metric exporters.

Fixtures wrapping these live in tests/conftest.py; import the classes from here for type hints.
"""
