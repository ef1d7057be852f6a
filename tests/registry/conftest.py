"""Unit tests of the registry's pure logic.

The registry package is imported from nodes/registry, which ``[tool.pytest.ini_options]
pythonpath`` puts on the import path. Fakes and builders shared by the tests here live in
``registry_fakes.py``.
"""

from __future__ import annotations

import pytest
from onex_registry.discovery import DiscoveryConsumer
from registry_fakes import make_consumer


@pytest.fixture
async def consumer() -> DiscoveryConsumer:
    """A discovery consumer past its replay, recording what it dead-letters and publishes."""
    return make_consumer()
