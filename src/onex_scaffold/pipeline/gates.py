"""Quality gates on a rendered node (the validator stage) and automatic fixes (the refiner).

Gates: every file parses (Python, TOML, YAML, JSON), ruff check, ruff format --check,
mypy --strict (the node's own configuration), and the node's own unit tests (pytest,
integration tests skipped). The tools are those of the Python running the stage (the
stage nodes run in the environment that has ``onex-node-template[dev]``), so nothing is
installed per request. mypy keeps its cache under ``$ONEX_PIPELINE_CACHE`` (default
``~/.cache/onex-node/pipeline``), in a folder per toolchain (interpreter, environment,
mypy version) and one slot per running check, so third-party modules are analysed once
and two environments sharing the cache never invalidate each other's entries. All the
gates start at once (the parse check too): a node that does not parse reports the parse
findings only, exactly as if the tools had not run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Protocol

import yaml

from onex_scaffold.pipeline.archive import node_files
from onex_scaffold.pipeline.events import Finding
from onex_scaffold.pipeline.recording import StageFailure
from onex_scaffold.stage import GateStatus, ValidationGate

#: Longest one tool may run on one node (seconds).
TOOL_TIMEOUT_S: Final = 180.0
#: Weight of each gate in the score (sums to 100).
WEIGHTS: Final = {
    "files_parse": 20,
    "ruff_check": 15,
    "ruff_format": 10,
    "mypy_strict": 25,
    "unit_tests": 30,
}
_FIXABLE_GATES: Final = frozenset({"ruff_check", "ruff_format"})


def cache_root() -> Path:
    configured = os.environ.get("ONEX_PIPELINE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onex-node" / "pipeline"


@contextlib.contextmanager
def _mypy_cache_slot() -> Iterator[Path]:
    """A mypy cache folder nobody else uses right now (mypy's cache is one writer at a time)."""
    root = cache_root() / "mypy" / _mypy_toolchain()
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(64):
        handle: IO[str] = (root / f"slot-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield root / f"slot-{slot}"
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError(f"all 64 mypy cache slots under {root} are busy")


def _mypy_toolchain() -> str:
    """What mypy's cache entries depend on besides the node: this interpreter and its
    environment (where the third-party modules are installed) and mypy itself."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mypy_version = version("mypy")
    except PackageNotFoundError:
        mypy_version = "absent"
    key = "\n".join((sys.version, sys.prefix, sys.executable, mypy_version))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _tool(name: str) -> list[str]:
    """The tool's own executable next to this interpreter when there is one (saves a
    Python start per call), else ``python -m name``."""
    executable = Path(sys.executable).parent / name
    if executable.is_file() and os.access(executable, os.X_OK):
        return [str(executable)]
    return [sys.executable, "-m", name]


def _tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONSUL_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1", PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    return env


class ToolStopped(StageFailure):
    """A tool was ended by a signal (the OOM killer's SIGKILL, a Ctrl-C sent to the node's
    whole process group): it said nothing about the code, so no gate result is made of it."""


def _tool_name(argv: list[str]) -> str:
    """``mypy`` for ``python -m mypy ...`` and for ``.../bin/mypy ...``."""
    return argv[2] if len(argv) > 2 and argv[1] == "-m" else Path(argv[0]).name


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            env=env or _tool_env(),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv[:3])} did not finish within {TOOL_TIMEOUT_S:g} s"
    except OSError as error:
        return 127, f"cannot run {argv[0]}: {error}"
    if done.returncode < 0:
        number = -done.returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        raise ToolStopped(
            f"{_tool_name(argv)} was stopped by {name} before it "
            "finished, so the code was not judged; send the request again (a SIGKILL is "
            "often the kernel's out-of-memory killer: give the validator more memory)"
        )
    return done.returncode, (done.stdout + done.stderr)


@dataclass
class GateResult:
    name: str
    passed: bool
    findings: list[Finding] = field(default_factory=list)
    message: str = ""
    duration_ms: int = 0
    skipped: bool = False


def _timed(name: str, work: GateWork, root: Path) -> GateResult:
    started = time.perf_counter()
    result = work(root)
    result.name = name
    result.duration_ms = round((time.perf_counter() - started) * 1000)
    return result


class GateWork:
    def __call__(self, root: Path) -> GateResult:  # pragma: no cover - interface
        raise NotImplementedError


class FilesParse(GateWork):
    def __call__(self, root: Path) -> GateResult:
        findings: list[Finding] = []
        count = 0
        for rel in node_files(root):
            path = root / rel
            try:
                if rel.endswith(".py"):
                    compile(path.read_bytes(), rel, "exec", dont_inherit=True)
                elif rel.endswith(".toml"):
                    tomllib.loads(path.read_text(encoding="utf-8"))
                elif rel.endswith((".yaml", ".yml")):
                    list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
                elif rel.endswith(".json"):
                    json.loads(path.read_text(encoding="utf-8"))
                else:
                    continue
                count += 1
            except (SyntaxError, ValueError, yaml.YAMLError, UnicodeDecodeError) as error:
                findings.append(Finding(gate="files_parse", file=rel, message=str(error)[:300]))
        return GateResult(
            "files_parse", not findings, findings, f"{count} files parse" if not findings else ""
        )


class RuffCheck(GateWork):
    def __call__(self, root: Path) -> GateResult:
        code, out = _run(
            [*_tool("ruff"), "check", "--no-cache", "--output-format", "json", "."],
            root,
        )
        try:
            items = json.loads(out[out.index("[") :]) if "[" in out else []
        except ValueError:
            items = []
        findings = [
            Finding(
                gate="ruff_check",
                file=str(Path(item.get("filename", "")).resolve().relative_to(root.resolve()))
                if item.get("filename")
                else None,
                line=(item.get("location") or {}).get("row"),
                code=item.get("code"),
                message=str(item.get("message", ""))[:300],
                fixable=bool(item.get("fix")),
            )
            for item in items
            if isinstance(item, dict)
        ]
        if code != 0 and not findings:
            findings.append(Finding(gate="ruff_check", message=out.strip()[-500:]))
        return GateResult("ruff_check", code == 0, findings, "no findings" if code == 0 else "")


# `ruff format --check` names a file it would change as "Would reformat: a.py" in older ruff
# and as a diagnostic pointing at it (" --> a.py:1:3") in newer; the node pins only ruff>=0.6.
_RUFF_FORMAT_FILE: Final = re.compile(
    r"^(?:Would reformat: (?P<old>.+)| *--> (?P<new>.+?):\d+:\d+)$"
)


def unformatted_files(output: str) -> list[str]:
    """The files `ruff format --check` would change, in its order, each once."""
    files: dict[str, None] = {}
    for line in output.splitlines():
        if match := _RUFF_FORMAT_FILE.match(line.rstrip()):
            files[(match["old"] or match["new"]).strip()] = None
    return list(files)


class RuffFormat(GateWork):
    def __call__(self, root: Path) -> GateResult:
        code, out = _run([*_tool("ruff"), "format", "--no-cache", "--check", "."], root)
        findings = [
            Finding(gate="ruff_format", file=file, fixable=True, message="would be reformatted")
            for file in unformatted_files(out)
        ]
        if code != 0 and not findings:
            findings.append(Finding(gate="ruff_format", message=out.strip()[-500:]))
        return GateResult("ruff_format", code == 0, findings, "formatted" if code == 0 else "")


_MYPY_LINE: Final = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+): error: (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$"
)


def _fresh_mtimes(root: Path, cache: Path) -> None:
    """Give the node's sources a modification time no earlier node checked in ``cache`` had.

    mypy trusts a cache entry without reading the file when its path, size and mtime (whole
    seconds) match. Paths are relative to the node, so two nodes of one batch whose names
    have the same length (``order-writer-1``, ``order-writer-2``) unpacked within the same
    second shared ``tests/test_handlers.py``'s entry, and the second failed on the first's
    imports. A new mtime per check makes mypy compare contents instead.
    """
    record = cache.with_name(f"{cache.name}.mtime")
    try:
        last = int(record.read_text())
    except (OSError, ValueError):
        last = 0
    stamp = max(int(time.time()), last + 1)
    for rel in node_files(root):
        if rel.endswith((".py", ".pyi")):
            os.utime(root / rel, (stamp, stamp), follow_symlinks=False)
    record.write_text(str(stamp))


class MypyStrict(GateWork):
    def __call__(self, root: Path) -> GateResult:
        with _mypy_cache_slot() as cache:
            _fresh_mtimes(root, cache)  # under the slot's lock: one check at a time
            code, out = _run(
                [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
                 "--no-error-summary", "--hide-error-context", "--no-pretty"],
                root,
            )  # fmt: skip
        findings = [
            Finding(
                gate="mypy_strict",
                file=m.group("file"),
                line=int(m.group("line")),
                code=m.group("code"),
                message=m.group("msg")[:300],
            )
            for line in out.splitlines()
            if (m := _MYPY_LINE.match(line))
        ]
        if code != 0 and not findings:
            findings.append(Finding(gate="mypy_strict", message=out.strip()[-500:]))
        return GateResult("mypy_strict", code == 0, findings, "no issues" if code == 0 else "")


class UnitTests(GateWork):
    def __call__(self, root: Path) -> GateResult:
        # Only the plugin the node's tests use: every plugin installed in this environment
        # (ours has Copier's) would otherwise be imported for each run.
        env = _tool_env()
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        code, out = _run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
             "pytest_asyncio.plugin", "-m", "not integration", "--no-header", "-rN"],
            root,
            env,
        )  # fmt: skip
        summary = next(
            (line.strip("= ") for line in reversed(out.splitlines()) if line.strip()), ""
        )
        passed = code == 0
        findings = []
        if not passed:
            failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
            findings = [Finding(gate="unit_tests", message=line[:300]) for line in failed[:20]]
            if not findings:
                findings.append(Finding(gate="unit_tests", message=out.strip()[-500:]))
        return GateResult("unit_tests", passed, findings, summary[:200])


def _toolchain() -> str:
    """What the gates' results depend on besides the files: the tools and their versions."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [sys.version, hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]
    for name in ("ruff", "mypy", "pytest", "pytest-asyncio", "pydantic", "onex-node-template"):
        try:
            parts.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name}=absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cached_gates(digest: str, root: Path, level: str = "full") -> tuple[list[GateResult], bool]:
    """``run_gates`` remembered by the node's tree digest and the toolchain: the same files
    checked by the same tools give the same results (a redelivered event, or regenerating a
    node that did not change, costs nothing). ``ONEX_PIPELINE_VALIDATION_CACHE=0`` turns it
    off. Returns (results, whether they came from the cache)."""
    if os.environ.get("ONEX_PIPELINE_VALIDATION_CACHE", "1") == "0":
        return run_gates(root, level), False
    path = cache_root() / "validated" / f"{digest}-{level}-{_toolchain()}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        results = [
            GateResult(
                name=item["name"],
                passed=bool(item["passed"]),
                findings=[Finding.model_validate(f) for f in item["findings"]],
                message=str(item["message"]),
                duration_ms=0,
                skipped=bool(item["skipped"]),
            )
            for item in stored
        ]
        return results, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    results = run_gates(root, level)
    if all(r.passed for r in results):  # only clean results: a flaky failure is retried
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "passed": r.passed,
                        "findings": [f.model_dump() for f in r.findings],
                        "message": r.message,
                        "skipped": r.skipped,
                    }
                    for r in results
                ]
            ),
            encoding="utf-8",
        )
        os.replace(temporary, path)
    return results, False


def run_gates(root: Path, level: str = "full") -> list[GateResult]:
    """Every gate on the node in ``root``, all side by side (each tool is its own process;
    the longest, mypy and the tests, start first)."""
    heavy: list[tuple[str, GateWork]] = [("ruff_check", RuffCheck()), ("ruff_format", RuffFormat())]
    if level == "full":
        heavy = [("mypy_strict", MypyStrict()), ("unit_tests", UnitTests()), *heavy]
    with ThreadPoolExecutor(max_workers=len(heavy) + 1) as pool:
        futures = [pool.submit(_timed, name, work, root) for name, work in heavy]
        parsed = _timed("files_parse", FilesParse(), root)
        # The tools only repeat a node's syntax errors: those are reported alone, as if
        # the tools had not run (the pool still waits for them, none outlives the call).
        others = [future.result() for future in futures]
    if not parsed.passed:
        return [parsed]
    results = [parsed, *others]
    if level != "full":
        for name in ("mypy_strict", "unit_tests"):
            results.append(
                GateResult(name, True, message="skipped (fast validation)", skipped=True)
            )
    order = list(WEIGHTS)
    return sorted(results, key=lambda r: order.index(r.name))


def score(results: list[GateResult]) -> float:
    """Share of the gates that ran, weighted, 0-100 (skipped gates count for nothing)."""
    ran = [r for r in results if not r.skipped]
    total = sum(WEIGHTS[r.name] for r in ran)
    passed = sum(WEIGHTS[r.name] for r in ran if r.passed)
    return round(100.0 * passed / total, 1) if total else 0.0


def fixable(results: list[GateResult]) -> bool:
    """True when every failing gate is one the refiner can fix."""
    failing = [r for r in results if not r.passed]
    return bool(failing) and all(r.name in _FIXABLE_GATES for r in failing)


def _finding_text(finding: Finding) -> str:
    where = f"{finding.file or ''}{':' + str(finding.line) if finding.line else ''}"
    return f"{where} {finding.code or ''} {finding.message}".strip()


def as_validation_gates(results: list[GateResult]) -> list[ValidationGate]:
    gates = []
    for index, result in enumerate(results, start=1):
        status: GateStatus = "skipped" if result.skipped else "pass" if result.passed else "fail"
        message = result.message or "; ".join(_finding_text(f) for f in result.findings[:5])
        gates.append(
            ValidationGate(
                gate_id=f"V{index}",
                name=result.name,
                status=status,
                message=message or None,
                duration_ms=result.duration_ms,
            )
        )
    return gates


class Refiner(Protocol):
    """A pluggable refiner (e.g. one backed by a language model): edits the node in ``root``
    to address ``findings`` and returns one line per change it made."""

    def refine(self, root: Path, findings: Sequence[Finding]) -> list[str]: ...


def configured_refiner() -> Refiner | None:
    """``ONEX_PIPELINE_REFINER=module:factory`` when set; None (ruff's fixes only) otherwise."""
    spec = os.environ.get("ONEX_PIPELINE_REFINER", "").strip()
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"ONEX_PIPELINE_REFINER must be module:factory, got {spec!r}")
    refiner: Refiner = getattr(importlib.import_module(module_name), attribute)()
    return refiner


def refine(root: Path, findings: Sequence[Finding] = ()) -> list[str]:
    """ruff --fix and ruff format on the node in place, then the configured refiner if any;
    returns what changed."""
    fixes: list[str] = []
    code, out = _run([*_tool("ruff"), "check", "--no-cache", "--fix", "-q", "."], root)
    if "fixed" in out.lower() or code == 0:
        fixes.append("ruff check --fix")
    code, out = _run([*_tool("ruff"), "format", "--no-cache", "."], root)
    match = re.search(r"(\d+) files? reformatted", out)
    if match and match.group(1) != "0":
        fixes.append(f"ruff format ({match.group(1)} files)")
    plugged = configured_refiner()
    if plugged is not None:
        fixes.extend(plugged.refine(root, findings))
    return fixes
