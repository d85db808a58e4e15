"""The `algorithmic-qa` pipeline: a saved model declares it in `config.custom_pipelines` and ships its file, so
`pipeline(model=folder, trust_remote_code=True)` answers questions, batched, in a fresh process where this project
cannot be imported, exactly as `model.solve` does in-process."""

import json
import subprocess
import sys

import pytest
from transformers import pipeline

from modeling_llama_delta import PIPELINE_TASK
from tests.helpers.models import exact_sorter
from tests.test_export import char_tokenizer
from tests.test_remote_code import fresh_process_environment

LENGTH = 6  # longest string the tiny sorter takes
# Upper-case words and punctuation spell nothing: Δ sorts exactly the quoted lower-case letters.
QUESTIONS = ['SORT "dcab"', 'SORT "fedcba"', 'SORT "x"', 'SORT "bab"']
SORTED = ["abcd", "abcdef", "x", "abb"]

# Runs in the fresh process: argv = checkpoint folder, output file.
PIPELINE_SCRIPT = f"""
import importlib, json, sys
for name in ("modeling_llama_delta", "llama_delta"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{{name}} is importable in the fresh process")
from transformers import pipeline

solver = pipeline(model=sys.argv[1], trust_remote_code=True)
cls = type(solver)
out = {{
    "class": f"{{cls.__module__}}.{{cls.__name__}}",
    "task": solver.task,
    "batched": solver({QUESTIONS!r}, batch_size=3),
    "one_by_one": solver({QUESTIONS!r}),
    "single": solver({QUESTIONS[0]!r}),
}}
try:
    solver('SORT "' + "a" * 80 + '"')
except ValueError as error:
    out["refusal"] = str(error)
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tokenizer = char_tokenizer()
    model = exact_sorter(tokenizer, LENGTH)
    folder = tmp_path_factory.mktemp("sorter")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def test_in_process_pipeline_equals_solve(saved):
    model, tokenizer, _ = saved
    solver = pipeline(PIPELINE_TASK, model=model, tokenizer=tokenizer)
    assert model.solve(QUESTIONS, tokenizer) == SORTED
    assert [out["answer"] for out in solver(QUESTIONS, batch_size=3)] == SORTED
    assert solver(QUESTIONS[1]) == {"answer": SORTED[1]}
    with pytest.raises(TypeError, match="takes no parameters besides batch_size"):
        solver(QUESTIONS[0], top_k=2)


def test_saved_config_declares_the_pipeline(saved, tmp_path):
    model, tokenizer, folder = saved
    declared = json.loads((folder / "config.json").read_text())["custom_pipelines"]
    assert declared == {
        PIPELINE_TASK: {"impl": "pipeline_llama_delta.AlgorithmicQAPipeline", "pt": ["AutoModel"], "type": "text"}
    }
    # `Pipeline.save_pretrained` (transformers' own way to share a custom pipeline) writes the same entry
    pipeline(PIPELINE_TASK, model=model, tokenizer=tokenizer).save_pretrained(tmp_path / "via_pipeline")
    assert json.loads((tmp_path / "via_pipeline" / "config.json").read_text())["custom_pipelines"] == declared
    assert (tmp_path / "via_pipeline" / "pipeline_llama_delta.py").is_file()


def test_fresh_process_pipeline_from_remote_code(saved, tmp_path):
    _, _, folder = saved
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(folder), "out.json"],
        cwd=elsewhere,
        env=fresh_process_environment(tmp_path, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((elsewhere / "out.json").read_text())
    assert out["class"].startswith("transformers_modules.")
    assert out["class"].endswith("pipeline_llama_delta.AlgorithmicQAPipeline")
    assert out["task"] == PIPELINE_TASK  # inferred from config.custom_pipelines
    assert [answer["answer"] for answer in out["batched"]] == SORTED
    assert [answer["answer"] for answer in out["one_by_one"]] == SORTED
    assert out["single"] == {"answer": SORTED[0]}
    assert out["refusal"] == "the question has 88 tokens; the model's context is 64"
