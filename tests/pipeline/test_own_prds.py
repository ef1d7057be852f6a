"""Our own nodes keep the PRD they are generated from, and it gives back their answers.

With the re-render check (template-owned files are what the template renders from the
recorded answers), this makes each node exactly what the pipeline produces from its PRD.md;
`onex-node pipeline regenerate-self --check` proves the same through the live pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from onex_scaffold._rerender import PRD_FILE, answers, node_folders
from onex_scaffold.pipeline import stages
from onex_scaffold.pipeline.events import ContractBuilt, NodeGenerationRequested
from onex_scaffold.pipeline.runner import make_request
from onex_scaffold.pipeline.selfhost import SelfRegenerationError, own_nodes

ROOT = Path(__file__).resolve().parents[2]
NODES = node_folders(ROOT)


def test_every_node_keeps_a_prd() -> None:
    assert {n.name for n in own_nodes(ROOT)} == {n.name for n in NODES}
    assert len(NODES) == 8  # the registry and the seven stage nodes


@pytest.mark.parametrize("node", NODES, ids=[n.name for n in NODES])
def test_prd_gives_the_recorded_answers(node: Path, tmp_path: Path) -> None:
    request = make_request((node / PRD_FILE).read_text(), tmp_path / "out", prd_name=PRD_FILE)
    analysed = stages.analyze_prd(NodeGenerationRequested(request=request))
    gathered = stages.gather_intelligence(analysed, consul="")  # type: ignore[arg-type]
    built = stages.build_contract(gathered)  # type: ignore[arg-type]
    assert isinstance(built, ContractBuilt), getattr(built, "reason", built)
    assert built.answers == answers(node)


def test_a_node_without_prd_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "nodes" / "lonely"
    node.mkdir(parents=True)
    (node / ".copier-answers.yml").write_text("_commit: abc\n")
    with pytest.raises(SelfRegenerationError, match=r"lonely: no PRD\.md"):
        own_nodes(tmp_path)


def test_a_relative_template_path_is_sent_absolute(tmp_path: Path) -> None:
    request = make_request("# X\n", tmp_path / "out", template=".")
    assert request.template == str(Path.cwd())
    url = "https://example.invalid/template.git"
    assert make_request("# X\n", tmp_path / "out", template=url).template == url
