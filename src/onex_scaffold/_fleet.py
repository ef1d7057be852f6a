"""The ONEX nodes registered in Consul, with status, version, type and address.

``onex-node nodes`` (:mod:`onex_scaffold.cli.nodes`) prints them.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import consul
from packaging.version import InvalidVersion, Version

from onex_scaffold._exceptions import ConsulQueryError

#: Services the registry manages carry this meta pair (see nodes/registry consul_registry.py).
MANAGED_FILTER: Final = 'Service.Meta.onex_managed_by == "onex-registry"'
_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}
DEFAULT_CONSUL: Final = "http://127.0.0.1:8500"


@dataclass(frozen=True)
class NodeRow:
    service: str
    service_id: str
    node_id: str
    node_name: str
    node_type: str
    version: str
    status: str
    address: str
    instance_id: str
    domain: str
    check_output: str
    #: The template version the node was rendered from (Meta ``template_version``).
    template_version: str = ""


def consul_address(explicit: str | None) -> str:
    """--consul, else CONSUL_HTTP_ADDR, else the dev stack's Consul, else Consul's default."""
    if explicit:
        return explicit
    env = os.environ.get("CONSUL_HTTP_ADDR")
    if env:
        return env
    try:
        from onex_scaffold.devstack import registry as dev_registry
    except ImportError:
        return DEFAULT_CONSUL
    return dev_registry.consul_http_addr() or DEFAULT_CONSUL


def _client(address: str) -> consul.Consul:
    raw = address if "://" in address else f"http://{address}"
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConsulQueryError(
            f"{address!r} is not a Consul address; use host:port or http://host:port"
        )
    return consul.Consul(
        host=parts.hostname,
        port=parts.port or 8500,
        scheme=parts.scheme,
        token=os.environ.get("CONSUL_HTTP_TOKEN"),
    )


def _worst(statuses: list[str]) -> str:
    if not statuses:
        return "passing"  # Consul's own view: a service without checks is healthy
    return max(statuses, key=lambda s: _SEVERITY.get(s, 2))


def list_nodes(address: str, service: str | None = None) -> list[NodeRow]:
    """Every instance the registry put in Consul (optionally of one service), sorted."""
    client = _client(address)
    try:
        if service:
            names = [service]
        else:
            _, catalog = client.catalog.services()
            names = sorted(catalog)
        rows: list[NodeRow] = []
        for name in names:
            _, entries = client.health.service(name, filter_expr=MANAGED_FILTER)
            rows.extend(_row(entry) for entry in entries)
    except OSError as error:  # requests' errors are OSErrors
        raise ConsulQueryError(
            f"cannot reach Consul at {address}: {error.__class__.__name__}. "
            "Start the dev stack with `onex-node dev up`, or set CONSUL_HTTP_ADDR / --consul."
        ) from error
    except consul.ConsulException as error:
        raise ConsulQueryError(f"Consul at {address} refused the query: {error}") from error
    return sorted(rows, key=lambda r: (r.service, r.node_id))


def _row(entry: dict[str, Any]) -> NodeRow:
    svc = entry.get("Service") or {}
    meta: dict[str, str] = svc.get("Meta") or {}
    sid = str(svc.get("ID", ""))
    checks = [c for c in entry.get("Checks") or [] if c.get("ServiceID") == sid]
    status = _worst([str(c.get("Status", "critical")) for c in checks])
    address = str(svc.get("Address") or (entry.get("Node") or {}).get("Address") or "")
    port = svc.get("Port")
    outputs = [str(c.get("Output", "")).strip() for c in checks if c.get("Status") != "passing"]
    return NodeRow(
        service=str(svc.get("Service", "")),
        service_id=sid,
        node_id=meta.get("node_id", ""),
        node_name=meta.get("node_name", ""),
        node_type=meta.get("node_type", ""),
        version=meta.get("version", ""),
        status=status,
        address=f"{address}:{port}" if port else address,
        instance_id=meta.get("instance_id", ""),
        domain=meta.get("domain", ""),
        check_output="; ".join(o for o in outputs if o)[:200],
        template_version=meta.get("template_version", ""),
    )


# -- template versions (``onex-node nodes --outdated``) ---------------------------------------

_SHA: Final = re.compile(r"^[0-9a-f]{4,40}$")
_DESCRIBED: Final = re.compile(r"^(?P<tag>.+?)-(?P<distance>\d+)-g(?P<sha>[0-9a-f]{4,40})$")


def _tag_key(tag: str) -> Version | None:
    """A version tag's PEP 440 version; None for anything else. A commit abbreviation such as
    ``892c058`` parses as ``892rc58``, so a tag must have a dot."""
    if "." not in tag:
        return None
    try:
        return Version(tag)
    except InvalidVersion:
        return None


def template_checkout(source: str | None = None) -> Path | None:
    """The local git checkout of the template named by ``source`` (None for a git URL).

    Default: the bundled template's checkout. Raises :class:`ConsulQueryError` for a folder
    that is not the root of a git checkout.
    """
    from onex_scaffold._git import toplevel
    from onex_scaffold._template import is_url, template_root

    if source and is_url(source):
        return None
    folder = Path(source).expanduser().resolve() if source else template_root()
    if toplevel(folder) != folder:
        raise ConsulQueryError(
            f"{folder} is not a git checkout of the template: pass --template with a "
            "checkout or the template's git URL"
        )
    return folder


def newest_template_version(source: str | None = None) -> str:
    """The version a node rendered now from ``source`` would record (Copier's ``_commit``).

    A local checkout renders its ``HEAD`` (``git describe --tags --always``); a git URL its
    newest PEP 440 tag, else its ``HEAD`` commit. Default: the bundled template's checkout.
    """
    from onex_scaffold._git import GitError, git

    folder = template_checkout(source)
    if folder is not None:
        try:
            return git(folder, "describe", "--tags", "--always", "HEAD").strip()
        except GitError as error:
            raise ConsulQueryError(str(error)) from error
    url = str(source)  # only a URL has no checkout
    tags = [
        line.rsplit("refs/tags/", 1)[-1]
        for line in git(Path.cwd(), "ls-remote", "--tags", "--refs", url).splitlines()
    ]
    versioned = [(key, tag) for tag in tags if (key := _tag_key(tag)) is not None]
    if versioned:
        return max(versioned)[1]
    head = git(Path.cwd(), "ls-remote", url, "HEAD").split()
    if not head:
        raise ConsulQueryError(f"{url} has no tags and no HEAD; is it a template?")
    return head[0][:7]


def template_unchanged_since(checkout: Path, recorded: str) -> bool:
    """Whether the template's parts in ``checkout`` are at ``HEAD`` what they were at
    ``recorded`` (a node's ``_commit``): an update would then change none of its files.

    False when ``recorded`` is not a commit of this checkout (another fork, a lost commit).
    """
    from onex_scaffold._git import has_commit, run_git
    from onex_scaffold._template import TEMPLATE_PARTS

    match = _DESCRIBED.match(recorded)
    revision = match["sha"] if match else recorded
    if not revision or revision.startswith("-") or not has_commit(checkout, revision):
        return False
    diff = run_git(checkout, "diff", "--quiet", revision, "HEAD", "--", *TEMPLATE_PARTS)
    return diff.returncode == 0


def is_outdated(recorded: str, newest: str) -> bool:
    """Whether a node rendered at ``recorded`` (its ``_commit``) is behind ``newest``.

    Tags compare as PEP 440 versions (``v1.2.0-3-gabc`` is three commits after ``v1.2.0``);
    a bare commit is current only when it is the newest one; unknown is outdated.
    """
    if not recorded:
        return True
    if recorded == newest:
        return False
    if _SHA.match(recorded) and _SHA.match(newest):  # abbreviations of one commit
        return not (recorded.startswith(newest) or newest.startswith(recorded))

    def position(described: str) -> tuple[Version, int] | None:
        match = _DESCRIBED.match(described)
        tag, distance = (match["tag"], int(match["distance"])) if match else (described, 0)
        key = _tag_key(tag)
        return (key, distance) if key is not None else None

    mine, theirs = position(recorded), position(newest)
    if theirs is None:
        return True  # the newest is a bare commit and this node was made from another one
    return mine is None or mine < theirs


def outdated_nodes(rows: list[NodeRow], newest: str, checkout: Path | None = None) -> list[NodeRow]:
    """The rows whose template version is behind ``newest``.

    With the template's ``checkout``, a node made from an older commit whose template parts
    have not changed since is current: between releases every commit of the repository moves
    ``HEAD``, but only a change to the template gives its nodes something to update.
    """
    unchanged: dict[str, bool] = {}

    def behind(row: NodeRow) -> bool:
        if not is_outdated(row.template_version, newest):
            return False
        if checkout is None or not row.template_version:
            return True
        recorded = row.template_version
        if recorded not in unchanged:
            unchanged[recorded] = template_unchanged_since(checkout, recorded)
        return not unchanged[recorded]

    return [row for row in rows if behind(row)]
