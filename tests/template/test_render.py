"""Every node type x main option renders into a complete, well-formed project."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import git

from onex_scaffold import RenderedNode, jinja_leftovers, naming, read_answers, template_version
from onex_scaffold._git import run_git

from .conftest import COMMON, VARIANTS, project_env, run

EXPECTED_FILES = [
    ".copier-answers.yml",
    "pyproject.toml",
    "README.md",
    "contract.yaml",
    "start_node.py",
    ".env.template",
    "Dockerfile",
    "compose.node.yaml",
    ".gitignore",
    ".dockerignore",
    "{pkg}/__init__.py",
    "{pkg}/node.py",
    "{pkg}/handlers.py",
    "{pkg}/runtime/naming.py",
    "{pkg}/runtime/events.py",
    "{pkg}/runtime/config.py",
    "tests/test_handlers.py",
]

pytestmark = pytest.mark.parametrize("variant", list(VARIANTS))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)


def test_expected_files(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    pkg = naming().package_name(node.answers["service_name"])
    missing = [f for f in EXPECTED_FILES if not (node.path / f.format(pkg=pkg)).is_file()]
    assert not missing, f"{variant}: missing {missing}"
    kind = node.answers["node_type"]
    assert (node.path / pkg / "runtime" / f"{kind}.py").is_file()
    for other in {"effect", "compute", "reducer", "orchestrator"} - {kind}:
        assert not (node.path / pkg / "runtime" / f"{other}.py").exists()


def test_no_leftover_jinja(rendered: dict[str, RenderedNode], variant: str) -> None:
    root = rendered[variant].path
    leftovers = []
    for path in _files(root):
        relative = path.relative_to(root)
        if "{{" in str(relative) or "{%" in str(relative) or path.suffix == ".jinja":
            leftovers.append(f"{relative}: unrendered name")
            continue
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if jinja_leftovers(line) or re.search(r"(?<!%)%\}", line):
                leftovers.append(f"{relative}:{number}: {line.strip()}")
    assert not leftovers, "\n".join(leftovers)


def test_answers_recorded(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    answers = read_answers(node.path)
    for key, value in {**COMMON, **VARIANTS[variant]}.items():
        assert answers[key] == value, key
    assert answers["_src_path"] == node.answers["_src_path"]
    assert Path(answers["_src_path"]).is_absolute()
    assert template_version(node.path) == "99.99.99"
    # Questions that do not apply to this node type are not recorded.
    type_specific = {
        "use_postgres": "effect",
        "event_bus_enabled": "compute",
        "aggregation_window_s": "reducer",
        "state_backend": "reducer",
        "input_events": "reducer",
        "workflow_steps": "orchestrator",
    }
    for question, node_type in type_specific.items():
        assert (question in answers) == (answers["node_type"] == node_type), question


def test_python_compiles(rendered: dict[str, RenderedNode], variant: str) -> None:
    for path in _files(rendered[variant].path):
        if path.suffix == ".py":
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_pyproject(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    data = tomllib.loads((node.path / "pyproject.toml").read_text(encoding="utf-8"))
    deps = " ".join(data["project"]["dependencies"])
    assert "pydantic>=" in deps and "pydantic-settings>=" in deps and "confluent-kafka" in deps
    uses_pg = variant in {"effect-postgres", "reducer-postgres"}
    assert ("asyncpg" in deps) == uses_pg
    assert ("llama-index-workflows" in deps) == (variant == "orchestrator")
    assert data["project"]["name"] == node.answers["service_name"]
    assert data["tool"]["mypy"]["strict"] is True
    pkg = naming().package_name(node.answers["service_name"])
    assert data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [pkg]


def _contract(node: RenderedNode) -> dict[str, Any]:
    loaded = yaml.safe_load((node.path / "contract.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_contract_topics_come_from_naming(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    names = naming()
    answers = node.answers
    contract = _contract(node)
    assert contract["name"] == answers["service_name"]
    assert contract["node_type"] == answers["node_type"]
    assert contract["class_name"] == names.class_name(answers["node_name"], answers["node_type"])
    assert contract["actions"] == answers["actions"]
    assert contract["description"] == answers["description"]
    published = {t["topic"] for t in contract["topics"]["publishes"]}
    consumed = {t["topic"] for t in contract["topics"]["consumes"]}
    if variant == "compute-no-bus":
        assert published == consumed == set()
        return
    env, service = answers["kafka_environment"], answers["service_name"]
    assert names.introspection_topic(env) in published
    assert names.heartbeat_topic(env) in published
    assert names.introspection_request_topic(env) in consumed
    expected = names.node_topics(
        env, service, answers["node_type"], answers.get("input_events", [])
    )
    for role, topic in expected.items():
        if role == "command" or role.startswith("input:") or role == "introspection_request":
            assert topic in consumed, role
        else:
            assert topic in published, role
    for topic in consumed | {t for t in published if not t.endswith(".dlq")}:
        assert names.dead_letter_topic(topic) in published, topic


def test_readme_lists_topics_and_env(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    readme = (node.path / "README.md").read_text(encoding="utf-8")
    contract = _contract(node)
    for item in contract["topics"]["publishes"] + contract["topics"]["consumes"]:
        assert f"`{item['topic']}`" in readme
    env_names = re.findall(r"^# ([A-Z][A-Z0-9_]*)=", _read(node, ".env.template"), re.M)
    assert env_names, ".env.template lists no variables"
    for name in env_names:
        assert f"`{name}`" in readme, name


def _read(node: RenderedNode, name: str) -> str:
    return (node.path / name).read_text(encoding="utf-8")


def _settings_fields(node: RenderedNode) -> set[str]:
    """Upper-cased NodeSettings fields of the generated project: the env vars it reads."""
    pkg = naming().package_name(node.answers["service_name"])
    code = (
        f"from {pkg}.runtime.config import NodeSettings as S; "
        "print(' '.join(n.upper() for n in S.model_fields))"
    )
    return set(run(["python", "-c", code], node.path, project_env()).split())


def test_env_template_matches_settings(rendered: dict[str, RenderedNode], variant: str) -> None:
    """Every variable listed is one the node reads, with nothing secret filled in."""
    node = rendered[variant]
    fields = _settings_fields(node)
    listed = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$", _read(node, ".env.template"), re.M)
    unknown = sorted({name for name, _ in listed} - set(fields))
    assert not unknown, f".env.template lists variables NodeSettings does not read: {unknown}"
    for name, value in listed:
        if "PASSWORD" in name or name == "DATABASE_URL":
            assert value == "", f"{name} must not carry a value in .env.template"


def test_env_template_covers_settings(rendered: dict[str, RenderedNode], variant: str) -> None:
    """Across all variants, every NodeSettings field is documented somewhere."""
    if variant != "reducer":
        pytest.skip("checked once, on the union of all variants")
    node = rendered[variant]
    fields = _settings_fields(node)
    listed: set[str] = set()
    for other in rendered.values():
        listed |= set(
            re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", _read(other, ".env.template"), re.M)
        )
    assert not fields - listed, f"undocumented settings: {sorted(fields - listed)}"


def test_env_template_sets_the_design_variables(
    rendered: dict[str, RenderedNode], variant: str
) -> None:
    """The design document's variables are set (not commented out), with its defaults except
    KAFKA_AUTO_OFFSET_RESET (earliest: see docs/design-deviations.md); the rest stay comments."""
    node = rendered[variant]
    answers = node.answers
    active = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", _read(node, ".env.template"), re.M))
    expected = {
        "SERVICE_NAME": answers["service_name"],
        "SERVICE_VERSION": answers["version"],
        "SERVICE_PORT": str(answers["http_port"]),
        "LOG_LEVEL": "INFO",
    }
    if variant != "compute-no-bus":
        expected |= {
            "KAFKA_BOOTSTRAP_SERVERS": answers["kafka_bootstrap_servers"],
            "KAFKA_CONSUMER_GROUP": f"{answers['service_name']}_consumers",
            "KAFKA_AUTO_OFFSET_RESET": "earliest",
        }
    assert active == expected


def test_env_template_values_are_accepted_by_the_node(
    rendered: dict[str, RenderedNode], variant: str, tmp_path: Path
) -> None:
    """`cp .env.template .env` gives settings the node accepts, with the values set there."""
    node = rendered[variant]
    pkg = naming().package_name(node.answers["service_name"])
    (tmp_path / ".env").write_text(_read(node, ".env.template"), encoding="utf-8")
    code = f"from {pkg}.node import ANSWERS; print(ANSWERS.load_settings().consumer_group)"
    env = project_env()
    env["PYTHONPATH"] = str(node.path)
    for name in ("SERVICE_NAME", "KAFKA_CONSUMER_GROUP", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    out = run(["python", "-c", code], tmp_path, env)
    if variant != "compute-no-bus":
        assert out.split()[0] == f"{node.answers['service_name']}_consumers"


def test_dockerfile_hadolint_clean(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    run(["hadolint", "--failure-threshold", "info", "Dockerfile"], node.path)
    dockerfile = _read(node, "Dockerfile")
    # Pinned by digest, with the way to refresh it next to it.
    assert re.search(r"^FROM python:3\.\d+-slim@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert "docker buildx imagetools inspect python:3." in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M), "must run as a non-root user"
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'CMD ["python", "start_node.py"]' in dockerfile


def test_compose_fragment_valid(rendered: dict[str, RenderedNode], variant: str) -> None:
    node = rendered[variant]
    run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", "compose.node.yaml"],
        node.path,
    )
    compose = yaml.safe_load(_read(node, "compose.node.yaml"))
    answers = node.answers
    # The design document's names: node-<service>-<type>, depends on the broker and
    # `consul`, on the network `omninode-network`.
    name = f"node-{answers['service_name']}-{answers['node_type']}"
    assert list(compose["services"]) == [name]
    service = compose["services"][name]
    assert service["networks"] == ["omninode-network"]
    assert compose["networks"]["omninode-network"]["name"] == "omninode-network"
    assert service["environment"]["SERVICE_HOST"] == name
    assert "healthcheck" in service
    env = service["environment"]
    assert env["SERVICE_NAME"] == node.answers["service_name"]
    if variant == "compute-no-bus":
        assert "KAFKA_BOOTSTRAP_SERVERS" not in env
    else:
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == node.answers["kafka_bootstrap_servers"]
        assert {"omninode-bridge-redpanda", "consul"} <= set(service["depends_on"])


def _third_party_imports(files: list[Path], own: str) -> set[str]:
    found: set[str] = set()
    for path in files:
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(item, ast.Import):
                found |= {alias.name.split(".")[0] for alias in item.names}
            elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
                found.add(item.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != own}


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_imports_are_declared(rendered: dict[str, RenderedNode], variant: str) -> None:
    """The package imports only what pyproject's dependencies install; tests what dev adds."""
    node = rendered[variant]
    pkg = naming().package_name(node.answers["service_name"])
    project = tomllib.loads(_read(node, "pyproject.toml"))["project"]
    runtime = {_distribution(r) for r in project["dependencies"]}
    dev = runtime | {_distribution(r) for r in project["optional-dependencies"]["dev"]}
    owners = importlib.metadata.packages_distributions()

    def dists(module: str) -> set[str]:
        return {d.lower().replace("_", "-") for d in owners.get(module, [module])}

    code = [*(node.path / pkg).rglob("*.py"), node.path / "start_node.py"]
    for module in _third_party_imports(code, pkg):
        assert dists(module) & runtime, f"{module} is imported but not a dependency"
    for module in _third_party_imports(list((node.path / "tests").rglob("*.py")), pkg):
        assert dists(module) & dev, f"tests import {module}, not in the dev extra"


def _docker_ignored(patterns: list[str], path: str) -> bool:
    """.dockerignore semantics for the simple patterns we use: the last match wins."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        first = path.split("/", 1)[0]
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(first, pattern):
            ignored = not negated
    return ignored


def test_local_settings_and_dev_stack_state_are_ignored(
    rendered: dict[str, RenderedNode], variant: str, tmp_path: Path
) -> None:
    """`.onex-dev/` and `.env.*` stay out of git and the image; `.env.template` does not."""
    node = rendered[variant]
    project = tmp_path / "project"
    shutil.copytree(node.path, project)
    git(project, "init", "-q")
    for name in (".env", ".env.local", ".env.production", ".onex-dev/env"):
        (project / name).parent.mkdir(exist_ok=True)
        (project / name).write_text("SECRET=1\n", encoding="utf-8")
    ignored = [".env", ".env.local", ".env.production", ".onex-dev/env"]
    for name in ignored:
        git(project, "check-ignore", "-q", name)
    kept = run_git(project, "check-ignore", "-q", ".env.template")
    assert kept.returncode == 1, ".env.template must stay tracked"

    patterns = [
        line.strip()
        for line in _read(node, ".dockerignore").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in ignored:
        assert _docker_ignored(patterns, name), f"{name} would be sent to docker build"
    assert not _docker_ignored(patterns, ".env.template")
