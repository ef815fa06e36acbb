"""The package keeps its shape: data flows one way through the layers of DESIGN.md, and no module
reaches into another package's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "genesis_core"
# Left to right, as in DESIGN.md's data flow; a module may import from its own layer's package and
# from layers to its left. The shared helpers come first: every layer may use them.
LAYERS = [
    {"errors", "fingerprint", "files"}, {"config", "plugins"},
    {"data"}, {"features"}, {"strategy"}, {"engine"}, {"metrics"}, {"backtest"}, {"scoring"}, {"records"},
    {"optimizer"}, {"validation"}, {"champion"}, {"study"}, {"preflight"}, {"workflow"},
    {"cli", "mcp_server", "report", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _component(path: Path) -> str:
    """The top-level module or package a file belongs to (``optimizer`` for optimizer/_run.py)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every genesis_core import in a file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genesis_core"):
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if a.name.startswith("_") and a.name != "__version__"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("genesis_core")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_layer():
    assert {_component(p) for p in _modules()} <= set(RANK)


def test_data_flows_one_way():
    wrong = []
    for path in _modules():
        source = _component(path)
        for line, module in _imports(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue  # genesis_core itself: __version__
            target = parts[1]
            if target != source and RANK[target] > RANK[source]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({source}) imports {module} ({target}, a later layer)")
            elif target != source and RANK[target] == RANK[source] and RANK[source] != len(LAYERS) - 1:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}, a sibling of the same layer")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_packages_private_module():
    wrong = []
    for path in _modules():
        source = _component(path)
        for line, module in _imports(path):
            parts = module.split(".")
            private = [p for p in parts[2:] if p.startswith("_")]
            if private and parts[1] != source:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """A module that imported upward or privately would be named (the checks cannot pass vacuously)."""
    bad = PACKAGE / "data" / "_candles.py"
    source = bad.read_text()
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        source + "\nfrom genesis_core.optimizer._run import optimize\n" if self == bad else Path.read_bytes(self).decode()))
    try:
        test_data_flows_one_way()
    except AssertionError as exc:
        assert "data/_candles.py" in str(exc) and "genesis_core.optimizer._run" in str(exc)
    else:
        raise AssertionError("an upward import was not caught")
    try:
        test_no_module_imports_another_packages_private_module()
    except AssertionError as exc:
        assert "genesis_core.optimizer._run" in str(exc)
    else:
        raise AssertionError("a private import was not caught")
