from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def effect_prd() -> str:
    return (EXAMPLES / "effect-order-writer.md").read_text()
