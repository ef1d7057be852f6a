"""Fixtures for every test folder. Plain helpers live in ``tests/helpers`` (``import helpers``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _template_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Snapshots of the bundled template go to this session's folder, never the user's
    cache: checkouts with other template work (and their test runs) share that one, so a
    node's recorded commit would depend on who snapshotted last."""
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
