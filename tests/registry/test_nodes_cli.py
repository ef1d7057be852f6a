"""`onex-node nodes`: rows from Consul health entries, the table, the address it asks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onex_scaffold import _fleet
from onex_scaffold.cli import main
from onex_scaffold.cli import nodes as nodes_cli

ENTRY = {
    "Node": {"Node": "onex-dev", "Address": "127.0.0.1"},
    "Service": {
        "ID": "postgres-writer-94443ebe",
        "Service": "postgres-writer",
        "Address": "127.0.0.1",
        "Port": 8001,
        "Meta": {
            "node_id": "94443ebe",
            "node_name": "PostgresqlWriter",
            "node_type": "effect",
            "version": "0.1.0",
            "instance_id": "demo-1",
            "domain": "database",
            "template_version": "v0.3.0",
        },
    },
    "Checks": [
        {"CheckID": "serfHealth", "ServiceID": "", "Status": "passing", "Output": "ok"},
        {
            "CheckID": "postgres-writer-94443ebe:health",
            "ServiceID": "postgres-writer-94443ebe",
            "Status": "critical",
            "Output": "connection refused",
        },
    ],
}


def test_row_takes_the_service_s_own_checks_and_meta() -> None:
    row = _fleet._row(ENTRY)
    assert row.status == "critical"
    assert row.check_output == "connection refused"
    assert row.address == "127.0.0.1:8001"
    assert (row.node_type, row.version, row.node_id) == ("effect", "0.1.0", "94443ebe")
    assert row.template_version == "v0.3.0"


def test_table_lines_up_and_says_when_empty() -> None:
    table = nodes_cli.format_table([_fleet._row(ENTRY)])
    header, line = table.splitlines()
    assert header.split() == [
        "SERVICE", "TYPE", "VERSION", "TEMPLATE", "STATUS", "ADDRESS", "NODE", "ID"
    ]  # fmt: skip
    assert line.split() == [
        "postgres-writer",
        "effect",
        "0.1.0",
        "v0.3.0",
        "critical",
        "127.0.0.1:8001",
        "94443ebe",
    ]
    assert header.index("STATUS") == line.index("critical")
    assert nodes_cli.format_table([]) == "no ONEX nodes registered in Consul"
    assert "no instance of postgres-writer" in nodes_cli.format_table([], "postgres-writer")


def test_address_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ONEX_DEV_ROOT", str(tmp_path))
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    assert _fleet.consul_address(None) == _fleet.DEFAULT_CONSUL
    (tmp_path / ".onex-dev").mkdir()
    (tmp_path / ".onex-dev" / "state.json").write_text(
        json.dumps({"services": {"consul": {"name": "consul", "kind": "consul",
                                            "env": {"CONSUL_HTTP_ADDR": "127.0.0.1:18500"}}}})
    )  # fmt: skip
    assert _fleet.consul_address(None) == "127.0.0.1:18500"
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:28500")
    assert _fleet.consul_address(None) == "127.0.0.1:28500"
    assert _fleet.consul_address("127.0.0.1:38500") == "127.0.0.1:38500"


def test_unreachable_consul_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes", "--consul", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Consul at 127.0.0.1:1" in err and "onex-node dev up" in err
    assert "Traceback" not in err
