"""Where the Copier template lives, and the runtime modules it shares with us.

In a checkout the template is the repository root (``copier.yml`` beside
``src/``); in an installed wheel it ships as ``onex_scaffold/_template``.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_DIR_IN_TEMPLATE = Path("template", "{{package_name}}", "runtime")


@cache
def template_root() -> Path:
    """The folder holding ``copier.yml``: the checkout root, else the packaged copy."""
    for candidate in (_PACKAGE_DIR.parents[1], _PACKAGE_DIR / "_template"):
        if (candidate / "copier.yml").is_file() and (candidate / "template").is_dir():
            return candidate
    raise FileNotFoundError(
        "the ONEX Copier template was not found next to onex_scaffold; "
        "reinstall onex-node-template or pass --template"
    )


@cache
def naming() -> ModuleType:
    """The template's ``runtime/naming.py``: the one definition of names and topics."""
    return load_runtime_module("naming")


def load_runtime_module(name: str) -> ModuleType:
    """Import ``template/{{package_name}}/runtime/<name>.py`` as ``onex_scaffold._runtime.<name>``.

    Only stdlib-only runtime modules (``naming``) are meant to be loaded this way.
    """
    package = "onex_scaffold._runtime"
    if package not in sys.modules:
        spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [str(template_root() / RUNTIME_DIR_IN_TEMPLATE)]
        sys.modules[package] = module
    qualified = f"{package}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    path = template_root() / RUNTIME_DIR_IN_TEMPLATE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module
