"""Unit tests of the registry's pure logic: the registry package is imported from nodes/registry."""

from __future__ import annotations

import sys
from pathlib import Path

REGISTRY_ROOT = Path(__file__).resolve().parents[2] / "nodes" / "registry"
if str(REGISTRY_ROOT) not in sys.path:
    sys.path.insert(0, str(REGISTRY_ROOT))
