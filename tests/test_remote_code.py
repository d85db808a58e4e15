"""A saved checkpoint is self-contained remote code: it loads with `AutoModel.from_pretrained(folder,
trust_remote_code=True)` in a fresh, offline process where this project cannot be imported, with identical outputs
and library buffers; the shipped code is exactly the model's relative-import closure and imports only torch,
transformers and the standard library."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import modeling_llama_delta
from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from tests.helpers.configs import REMOTE_CODE_FILES, TINY_LLAMA

PACKAGE = Path(modeling_llama_delta.__file__).parent
ALLOWED_THIRD_PARTY = {"torch", "transformers"}

# Runs in the fresh process: argv = checkpoint folder, inputs file, output file.
LOAD_SCRIPT = """
import importlib, sys
for name in ("modeling_llama_delta", "llama_delta"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{name} is importable in the fresh process")
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    out = model(**load_file(sys.argv[2]))
tensors = {f"out.{key}": out[key] for key in ("answer_logits", "selection", "halt_probability")}
tensors["out.loss"] = out.loss.reshape(1)
tensors.update({f"buffer.{name}": buffer for name, buffer in model.named_buffers()})
cls = type(model)
save_file(tensors, sys.argv[3], metadata={"class": f"{cls.__module__}.{cls.__name__}"})
"""


def fresh_process_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """os.environ without PYTHONPATH, dynamic modules and Hub cache in tmp (so nothing cached is reused)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        OMP_NUM_THREADS="1",
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HOME=str(tmp_path / "hf_home"),
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def load_in_fresh_process(source: str, inputs: dict[str, torch.Tensor], tmp_path: Path, **env: str):
    """`AutoModel.from_pretrained(source, trust_remote_code=True)` in a new interpreter; its outputs and buffers."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    save_file(inputs, str(elsewhere / "inputs.safetensors"))
    command = [sys.executable, "-c", LOAD_SCRIPT, source, "inputs.safetensors", "outputs.safetensors"]
    result = subprocess.run(
        command, cwd=elsewhere, env=fresh_process_environment(tmp_path, **env), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with safe_open(str(elsewhere / "outputs.safetensors"), "pt") as outputs:
        return {key: outputs.get_tensor(key) for key in outputs.keys()}, outputs.metadata()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaDeltaConfig(
        **TINY_LLAMA,
        delta_word_size=16,
        delta_memory_size=8,
        delta_max_steps=8,
        delta_parse_mode="slots",
    )
    model = LlamaDeltaForAlgorithmicQA(config).eval()
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    return model, folder


def test_fresh_offline_process_loads_identically(checkpoint, tmp_path):
    model, folder = checkpoint
    inputs = {
        "input_ids": torch.randint(0, 100, (3, 6)),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 6]),
        "labels": torch.tensor([[3], [7], [15]]),
    }
    tensors, metadata = load_in_fresh_process(str(folder), inputs, tmp_path, HF_HUB_OFFLINE="1")
    assert metadata["class"].startswith("transformers_modules.")
    assert metadata["class"].endswith("modeling_llama_delta.LlamaDeltaForAlgorithmicQA")
    with torch.no_grad():
        expected = model(**inputs)
    torch.testing.assert_close(tensors["out.loss"], expected.loss.reshape(-1), rtol=0, atol=0)
    for key in ("answer_logits", "selection", "halt_probability"):
        torch.testing.assert_close(tensors[f"out.{key}"], getattr(expected, key), rtol=0, atol=0, msg=key)
    buffers = dict(model.named_buffers())
    assert {key.removeprefix("buffer.") for key in tensors if key.startswith("buffer.")} == set(buffers)
    for name, buffer in buffers.items():
        assert torch.equal(tensors[f"buffer.{name}"], buffer), name


def relative_imports(path: Path) -> set[str]:
    """Modules imported as `from .x import y` (the only relative form transformers copies)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module, f"{path.name}:{node.lineno} must be `from .module import name`"
            names.add(node.module)
    return names


def test_shipped_files_are_the_import_closure(checkpoint):
    _, folder = checkpoint
    shipped = {path.name for path in folder.iterdir()}
    assert shipped == {"config.json", "model.safetensors", *REMOTE_CODE_FILES}
    closure, todo = set(), ["modeling_llama_delta", "configuration_llama_delta"]
    while todo:
        module = todo.pop()
        if module not in closure:
            closure.add(module)
            todo.extend(relative_imports(PACKAGE / f"{module}.py"))
    assert {f"{module}.py" for module in closure} == REMOTE_CODE_FILES
    for name in REMOTE_CODE_FILES:
        assert (folder / name).read_text() == (PACKAGE / name).read_text(), name
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_llama_delta.LlamaDeltaConfig",
        "AutoModel": "modeling_llama_delta.LlamaDeltaForAlgorithmicQA",
    }


@pytest.mark.parametrize("name", sorted(REMOTE_CODE_FILES))
def test_remote_code_imports_only_torch_transformers_and_stdlib(name):
    for node in ast.walk(ast.parse((PACKAGE / name).read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            assert top in ALLOWED_THIRD_PARTY or top in sys.stdlib_module_names, (
                f"{name}:{node.lineno} imports {module}"
            )
