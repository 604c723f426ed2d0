"""The package's imports point one way: cli -> serve, training, export -> inference -> viz / scratch
-> models / data -> formats / files / spec -> errors / checks.

serve, training and export share a layer, so none imports another: a server that only predicts
never loads the trainer, and export reads models through inference alone. Inference imports
neither of them.

Every `import` in src/convnet (at any depth, inside functions too) is read with `ast`; an import
from a lower layer into a higher one, between two packages of the same layer, or any cycle
between files fails the test with the file and line that break the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convnet"

# Layer of each top-level part of the package; a file may import its own part or a lower layer.
LAYERS = {
    "__main__": 7,
    "cli": 6,
    "serve": 5, "training": 5, "export": 5,
    "inference": 4,
    "viz": 3, "scratch": 3,
    "models": 2, "data": 2,
    "formats": 1, "files": 1, "spec": 1,  # torch-free helpers every layer shares
    "errors": 0, "checks": 0,  # checks: plain value checks that formats itself uses
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, here: str | None = None) -> list[tuple[str, int]]:
    """(imported convnet module, line) for every import in the file, resolved to module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = here or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("convnet")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if not base.startswith("convnet"):
                continue
            # `from convnet.models import airnet` imports the submodule when one exists.
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = ((SRC.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                             or (SRC.parent / sub.replace(".", "/")).is_dir())
                out.append((sub if is_module else base, node.lineno))
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


FILES = sorted(p for p in SRC.rglob("*.py"))
GRAPH = {_module_name(p): [(m, line) for m, line in _imports(p)] for p in FILES}


def test_every_part_has_a_layer():
    parts = {_part(m) for m in GRAPH} - {""}
    assert parts <= set(LAYERS), f"parts without a layer in this test: {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path):
    here = _module_name(path)
    mine = _part(here)
    if not mine:  # convnet/__init__.py: the lazy public API, which names modules as strings
        return
    bad = []
    for target, line in GRAPH[here]:
        theirs = _part(target)
        if not theirs or theirs == mine:
            continue
        if LAYERS[theirs] >= LAYERS[mine]:
            bad.append(f"{path.relative_to(SRC)}:{line} imports {target} ({theirs}, layer {LAYERS[theirs]}) "
                       f"from {mine} (layer {LAYERS[mine]})")
    assert not bad, "\n".join(bad)


def test_no_cycles_between_files():
    modules = set(GRAPH)
    edges = {m: {t for t, _ in GRAPH[m] if t in modules and t != m} for m in modules}
    # A package's __init__ importing its own submodules is how it presents them, not a cycle
    # of concerns; a submodule importing its package's __init__ back would still show.
    for m in modules:
        if (SRC.parent / m.replace(".", "/")).is_dir():
            edges[m] = {t for t in edges[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_violation(tmp_path):
    # The walker itself can fail: imports inside functions, relative ones and `from package
    # import module` all resolve to the module that a lower layer must not reach.
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from convnet.training import train\n    from ..inference.model_file import ModelInfo\n")
    found = {name for name, _ in _imports(f, "convnet.data.x")}
    assert found == {"convnet.training.train", "convnet.inference.model_file"}
