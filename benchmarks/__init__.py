"""Benchmarks of the template, the node runtime and the registry (issue 7).

``python benchmarks/run.py [--quick] [--json FILE]``; see ``run.py``.
"""
