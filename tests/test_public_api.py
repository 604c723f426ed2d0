"""The public API (`convnet.X`) and the tutorial notebook written against it.

The notebook is read as the JSON file it is (nbformat 4), not executed here: CI runs it with
jupyter-execute. These tests check that what is committed is the executed notebook, with its
figures, and that its code reaches convnet only through names in `convnet.__all__`.
"""
from __future__ import annotations

import ast
import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import convnet

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
MODULE_ATTRIBUTES = {"__file__", "__version__"}  # plain module attributes, not part of the lazy table


def _cells(kind: str) -> list[dict]:
    return [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def _code_tree(cell: dict) -> ast.Module:
    """The cell's Python, with IPython's %magic and !shell lines left out (they are not Python)."""
    lines = "".join(cell["source"]).splitlines()
    return ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines))


@pytest.mark.parametrize("name", convnet.__all__)
def test_every_public_name_resolves(name):
    assert getattr(convnet, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        convnet.no_such_thing  # noqa: B018


def test_importing_convnet_loads_no_torch():
    code = "import sys, convnet; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_the_notebook_imports_no_convnet_submodule():
    imported = []
    for cell in _cells("code"):
        for node in ast.walk(_code_tree(cell)):
            if isinstance(node, ast.Import):
                imported += [a.name for a in node.names if a.name.startswith("convnet.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("convnet."):
                imported.append(node.module)
    assert imported == []


def test_the_notebook_uses_only_public_names_of_convnet():
    used = set()
    for cell in _cells("code"):
        for node in ast.walk(_code_tree(cell)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "convnet":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "convnet":
                used.update(a.name for a in node.names)
    assert used, "the notebook should use convnet"
    assert used - set(convnet.__all__) - MODULE_ATTRIBUTES == set()


def test_the_committed_notebook_holds_its_outputs_and_figures():
    cells = _cells("code")
    assert all(isinstance(c["execution_count"], int) for c in cells), "commit the notebook executed"
    outputs = [o for c in cells for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    pngs = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3  # the sample grid, the accuracy curve, the predictions grid
    for png in pngs:
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and min(image.size) >= 100


def test_the_committed_notebook_has_no_volatile_metadata():
    """Execution timestamps would change the file on every run; the committed notebook is stable."""
    assert [c["metadata"] for c in _cells("code") if "execution" in c["metadata"]] == []
