"""Tests of handlers.py (owner file): the stage runs on its input, refuses anything else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract_builder.handlers import execute_compute


def test_a_payload_of_another_stage_is_refused() -> None:
    with pytest.raises(ValidationError):
        execute_compute({"kind": "something_else"})
