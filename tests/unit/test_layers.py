"""The layer rules of the package, stated once and checked on every module.

Each folder of ``safefcgi/`` is a layer. A layer may import the layers listed for it
here and nothing above it; ``errors`` and ``logs`` are the floor every layer stands on.
Imports made only for type checking (under ``if TYPE_CHECKING:``) do not count: they run
nowhere. Django is imported at module level only where the project is loaded (the
fork-safety layer) and where Django looks for commands (``management/``), so that the
command line, the FastCGI layer and the process manager start without it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "safefcgi"
FLOOR = {"errors", "logs"}
# What each layer may import, besides itself and the floor.
MAY_IMPORT = {
    "fastcgi": set(),
    "forksafety": set(),
    "ops": {"fastcgi"},
    "process": {"fastcgi", "ops", "forksafety"},
    "management": {"cli", "config", "server"},
}
DJANGO_AT_MODULE_LEVEL = {"forksafety", "management"}


def layer_of(path: Path) -> str:
    """``fastcgi`` for safefcgi/fastcgi/records.py; the module name for a top-level one."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def runtime_imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import that runs."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    raise AssertionError(f"line {child.lineno}: relative import")
                base = child.module or ""
                found.extend((f"{base}.{alias.name}", child.lineno, top) for alias in child.names)
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, top and not nested)

    visit(tree, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def safefcgi_layer(imported: str) -> str | None:
    parts = imported.split(".")
    if parts[0] != "safefcgi":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(path: Path) -> list[str]:
    layer = layer_of(path)
    allowed = MAY_IMPORT.get(layer)
    problems = []
    for imported, line, top in runtime_imports(ast.parse(path.read_text(), str(path))):
        target = safefcgi_layer(imported)
        if allowed is not None and target is not None and target not in (
                allowed | FLOOR | {layer}):
            problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
        if (imported.split(".")[0] == "django" and top
                and layer not in DJANGO_AT_MODULE_LEVEL):
            problems.append(f"{path.relative_to(PACKAGE)}:{line} imports Django at module level")
    return problems


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_the_layers_below_it(path):
    assert layer_violations(path) == []


def test_floor_modules_import_nothing_of_ours_but_each_other():
    for name in FLOOR:
        imported = runtime_imports(ast.parse((PACKAGE / f"{name}.py").read_text()))
        assert {safefcgi_layer(i) for i, _, _ in imported} - {None} <= FLOOR, name


def test_the_rules_catch_an_upward_import(tmp_path, monkeypatch):
    """A FastCGI module importing process management or Django is reported."""
    fake_package = tmp_path / "safefcgi"
    (fake_package / "fastcgi").mkdir(parents=True)
    bad = fake_package / "fastcgi" / "bad.py"
    bad.write_text("import django.db\nfrom safefcgi.process.master import PreforkMaster\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake_package)
    assert layer_violations(bad) == [
        "fastcgi/bad.py:1 imports Django at module level",
        "fastcgi/bad.py:2 imports safefcgi.process.master.PreforkMaster",
    ]
