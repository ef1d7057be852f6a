"""Tests of handlers.py (owner file): the stage runs on its input, refuses anything else."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from prd_analyzer.handlers import execute_compute


def test_a_payload_of_another_stage_is_refused() -> None:
    with pytest.raises(ValidationError):
        execute_compute({"kind": "something_else"})


def test_a_markdown_prd_is_analysed() -> None:
    request = {
        "request_id": str(uuid.uuid4()),
        "prd": "# Order Writer\n\nNode type: effect\nService: order-writer\nDomain: billing\n",
        "output_directory": "/tmp/order-writer",
    }
    result = execute_compute({"kind": "node_generation_requested", "request": request})
    assert result["kind"] == "prd_analyzed"
    assert result["parsed_data"]["service_name"] == "order-writer"
    assert result["stages"][-1]["stage_name"] == "prd_analyzer"
    assert (
        execute_compute({"kind": "node_generation_requested", "request": request})["parsed_data"]
        == result["parsed_data"]
    )
