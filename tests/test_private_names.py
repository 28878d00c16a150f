"""No package reaches into another package's private (``_``-prefixed) names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"flrd": "flrd", "clients": "flrd.clients", "strategies": "flrd.strategies",
            "simulations": "flrd.simulations"}
SOURCES = sorted(p for folder in (*PACKAGES, "examples", "bench") for p in (ROOT / folder).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_package(dotted: list[str]) -> bool:
    folders = {installed: folder for folder, installed in PACKAGES.items()}
    for size in range(len(dotted), 0, -1):  # longest installed prefix, e.g. flrd.clients
        if (head := ".".join(dotted[:size])) in folders:
            return ROOT.joinpath(folders[head], *dotted[size:]).is_dir()
    return False


def _same_package(parent: list[str], package: str) -> bool:
    """Whether a private name under module path ``parent`` belongs to ``package``."""
    owner = parent if _is_package(parent) else parent[:-1]
    return ".".join(owner) == package


def _package_of(path: Path) -> str:
    """Installed package of a source file: ``flrd.codecs`` for flrd/codecs/x.py."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    top = PACKAGES.get(parts[0], parts[0])
    return ".".join([top, *parts[1:-1]])


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path)
    modules: dict[str, str] = {}  # local name -> imported module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                parts = target.split(".")
                first = next((i for i, part in enumerate(parts) if _private(part)), None)
                if first is not None and not _same_package(parts[:first], package):
                    found.append(f"{path.name}:{node.lineno} imports {target}")
                modules[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and (module := modules.get(node.value.id)) and module.startswith("flrd")
                and not _same_package(module.split("."), package)):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_of_other_packages(path):
    assert _violations(path) == []


def test_the_check_finds_a_violation(tmp_path):
    bad = ROOT / "flrd" / "probe_for_test.py"
    bad.write_text("from flrd import theory\nfrom flrd.theory import _checks\nx = theory._private\n"
                   "from .codecs.base import _fine_in_flrd_codecs_only\nfrom . import _own\n")
    try:
        assert len(_violations(bad)) == 3
    finally:
        bad.unlink()
