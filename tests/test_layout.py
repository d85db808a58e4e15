"""The repository's layers import one way, read from the source (ast) of every file:

    modeling_llama_delta (the Hub closure) <- data_builders <- llama_delta (tooling) <- train_sft.py, demo.py,
    experiments/, bench/

Nothing imports a script (`train_sft.py`, `demo.py`), only tests import test infrastructure (`tests/`), and no file
edits `sys.path` (pyproject's pytest `pythonpath` covers the tests; experiments and bench run as `python -m`).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_sft", "demo")
TOP_LEVEL = ("modeling_llama_delta", "data_builders", "llama_delta", "experiments", "bench", "tests", *SCRIPTS)
# layer (a package or a script) -> the project's top-level names it may import (a package: itself too, absolutely);
# any other of the project's names is wrong.
MAY_IMPORT = {
    "modeling_llama_delta": set(),  # relative imports only: it ships as flat remote code
    "data_builders": {"modeling_llama_delta", "data_builders"},
    "llama_delta": {"modeling_llama_delta", "data_builders", "llama_delta"},  # exact_match.py is loaded by path
    "train_sft": {"modeling_llama_delta", "data_builders", "llama_delta"},
    "demo": {"modeling_llama_delta", "data_builders", "llama_delta"},
    "experiments": {"modeling_llama_delta", "data_builders", "llama_delta", "experiments"},
    "bench": {"modeling_llama_delta", "data_builders", "llama_delta", "bench"},
    "tests": {"modeling_llama_delta", "data_builders", "llama_delta", "experiments", "tests"},
}


def layer_files(layer: str) -> list[Path]:
    script = ROOT / f"{layer}.py"
    return [script] if script.is_file() else sorted((ROOT / layer).rglob("*.py"))


def imported_top_levels(path: Path) -> set[str]:
    """The top-level names of a file's absolute imports (relative ones stay inside its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_every_top_level_python_file_and_package_has_a_layer():
    found = {path.stem for path in ROOT.glob("*.py")} | {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert found == set(MAY_IMPORT), found ^ set(MAY_IMPORT)


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_imports_point_one_way(layer):
    files = layer_files(layer)
    assert files, layer
    for path in files:
        project = imported_top_levels(path) & set(TOP_LEVEL)
        wrong = project - MAY_IMPORT[layer]
        allowed = sorted(MAY_IMPORT[layer])
        assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(wrong)}; it may import {allowed}"


def test_the_checks_see_a_wrong_import(tmp_path):
    """The scan itself: a layer importing upwards, or a script, is caught."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import os\nfrom llama_delta.sft import main\nimport train_sft as script\nfrom . import sibling\n")
    assert imported_top_levels(wrong) & set(TOP_LEVEL) == {"llama_delta", "train_sft"}


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_no_file_edits_sys_path(layer):
    for path in layer_files(layer):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "path":
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), (
                    f"{path.relative_to(ROOT)}:{node.lineno} uses sys.path"
                )
