"""Unit tests of the registry's pure logic.

The registry package is imported from nodes/registry, which ``[tool.pytest.ini_options]
pythonpath`` puts on the import path.
"""
