"""The public API is exactly ``onex_scaffold.__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import types

import onex_scaffold


def test_every_exported_name_exists() -> None:
    for name in onex_scaffold.__all__:
        assert getattr(onex_scaffold, name) is not None, name


def test_all_is_sorted_and_unique() -> None:
    names = list(onex_scaffold.__all__)
    assert names == sorted(set(names)), "keep __all__ sorted, each name once"


def test_every_public_attribute_is_exported() -> None:
    for name in onex_scaffold.__all__:
        getattr(onex_scaffold, name)  # load the lazy ones
    public = {
        name
        for name, value in vars(onex_scaffold).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }
    assert public <= set(onex_scaffold.__all__), sorted(public - set(onex_scaffold.__all__))


def test_exported_names_come_from_private_modules_or_public_packages() -> None:
    allowed = {"onex_scaffold.stage", "onex_scaffold.devstack"}
    for name in onex_scaffold.__all__:
        value = getattr(onex_scaffold, name)
        module = getattr(value, "__module__", None)
        if module is None or name == "__version__":
            continue
        assert module.startswith("onex_scaffold"), (name, module)
        inner = module.split(".")
        assert inner[1].startswith("_") or ".".join(inner[:2]) in allowed, (name, module)


def test_exported_errors_share_one_base_with_an_exit_code() -> None:
    for name in onex_scaffold.__all__:
        value = getattr(onex_scaffold, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, onex_scaffold.OnexError), name
    devstack = importlib.import_module("onex_scaffold.devstack")
    assert issubclass(devstack.DevStackError, onex_scaffold.OnexError)
    assert devstack.MissingToolError.exit_code == 2


def test_naming_module_provides_its_typed_interface() -> None:
    naming = onex_scaffold.naming()
    protocol = onex_scaffold.NamingModule
    members = {
        name for name in (*protocol.__annotations__, *vars(protocol)) if not name.startswith("_")
    }
    missing = sorted(name for name in members if not hasattr(naming, name))
    assert not missing, f"runtime/naming.py lacks {missing} that NamingModule promises"


def test_py_typed_marker_ships_beside_the_package() -> None:
    # hatch puts every file of src/onex_scaffold into the wheel; mypy users need this one.
    from pathlib import Path

    assert (Path(onex_scaffold.__file__).parent / "py.typed").is_file()
