"""Load tests and the benchmark harness (Locust file, `python -m loadtests.bench`).

Nothing in the product imports this package.
"""
