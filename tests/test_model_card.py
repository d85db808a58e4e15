"""The rendered card's metadata: the license follows the base model, `pipeline_tag`, the training hyperparameters
and the framework versions; `push_to_hub` passes `private`, `token` and `revision` on to the Hub client. The cards'
usage snippets (the Δ model's and the text baseline's) run as printed, in a fresh process."""

import ast
import importlib.metadata
import re
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

from llama_delta import export
from llama_delta.export import MeasuredResult, base_model_license, export_for_hub, export_text_baseline, push_to_hub
from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from tests.helpers.configs import TINY_LLAMA
from tests.test_export import char_tokenizer
from tests.test_remote_code import fresh_process_environment

HYPERPARAMETERS = {"learning_rate": 0.001, "train_batch_size": 32, "seed": 0, "num_epochs": 4}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaDeltaConfig(**TINY_LLAMA, delta_word_size=16, delta_memory_size=8, delta_max_steps=8)
    return LlamaDeltaForAlgorithmicQA(config).eval()


@pytest.mark.parametrize(
    ("base_model", "license"),
    [
        ("meta-llama/Llama-3.2-1B", "llama3.2"),
        ("meta-llama/Llama-3.2-3B-Instruct", "llama3.2"),
        ("meta-llama/Llama-3.1-8B", "llama3.1"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
        (None, "apache-2.0"),  # trained from scratch: the project's own
        ("someone/unknown-llama", "other"),  # never a guess
    ],
)
def test_card_license_follows_the_base_model(model, tmp_path, base_model, license):
    assert base_model_license(base_model) == license
    folder = export_for_hub(model, char_tokenizer(), tmp_path / "card", base_model=base_model)
    assert ModelCard.load(folder / "README.md").data.license == license


def test_card_metadata_hyperparameters_and_versions(model, tmp_path):
    folder = export_for_hub(
        model,
        char_tokenizer(),
        tmp_path / "card",
        base_model="meta-llama/Llama-3.2-1B",
        hyperparameters=HYPERPARAMETERS,
        license="mit",  # an explicit license wins over the base model's
    )
    data = ModelCard.load(folder / "README.md").data
    assert data.license == "mit" and data.pipeline_tag == "question-answering"
    assert data.hyperparameters == HYPERPARAMETERS
    assert data.framework_versions["transformers"] == importlib.metadata.version("transformers")
    assert data.framework_versions["torch"] == torch.__version__
    plain = ModelCard.load(export_for_hub(model, char_tokenizer(), tmp_path / "plain") / "README.md").data
    assert getattr(plain, "hyperparameters", None) is None  # none claimed when none were given


class RecordingApi:
    """Stands in for `HfApi`: records the calls `push_to_hub` makes (the local Hub has no branches or tokens)."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("HfApi", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs["revision"], kwargs["delete_patterns"]))


def test_push_passes_private_token_and_revision(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "HfApi", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    folder = export_for_hub(model, char_tokenizer(), tmp_path / "card")
    push_to_hub(folder, "me/tiny", private=True, token="hf_secret", revision="v2")
    assert RecordingApi.calls == [
        ("HfApi", "hf_secret"),
        ("create_repo", "me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"}),
        ("create_branch", "me/tiny", {"branch": "v2", "exist_ok": True, "repo_type": "model"}),
        ("upload_folder", "me/tiny", "v2", "*"),
    ]
    monkeypatch.setattr(RecordingApi, "calls", [])
    push_to_hub(folder, "me/tiny")  # defaults: the logged-in token, the org's default visibility, main
    assert [call[0] for call in RecordingApi.calls] == ["HfApi", "create_repo", "upload_folder"]
    assert RecordingApi.calls[0] == ("HfApi", None) and RecordingApi.calls[2][2] is None


def run_card_snippets(folder, repo_id: str, tmp_path) -> list:
    """Run the card's ```python blocks, with `repo_id` pointing at `folder`, in a fresh interpreter (no project on
    its path, stdin closed so that a trust-remote-code prompt fails); what each `print` printed."""
    text = (folder / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks and all(f'"{repo_id}"' in block for block in blocks), text
    script = "\n".join(blocks).replace(f'"{repo_id}"', repr(str(folder)))
    (tmp_path / "elsewhere").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path / "elsewhere",
        env=fresh_process_environment(tmp_path, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return [ast.literal_eval(line) for line in result.stdout.splitlines() if line.startswith("[")]


def test_delta_card_usage_runs_as_printed(model, tmp_path):
    """model.solve and the algorithmic-qa pipeline, as the card prints them, answer as `solve` does here; a
    question with quotes stays one Python string."""
    question = 'What is "7" plus 5?'
    folder = export_for_hub(model, char_tokenizer(), tmp_path / "card", repo_id="me/tiny", example_question=question)
    solved, piped = run_card_snippets(folder, "me/tiny", tmp_path)
    expected = model.solve([question], char_tokenizer())
    assert solved == expected and piped == [{"answer": answer} for answer in expected]


def test_text_baseline_export_card_and_usage(tmp_path):
    """The text baseline's export: a plain causal LM (no remote code) with its own card: metadata as the Δ model's
    (license of the base model, hyperparameters, results), `pipeline_tag` text-generation, and a usage snippet that
    generates what the pipeline generates here."""
    from transformers import LlamaConfig, LlamaForCausalLM, pipeline

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()
    result = MeasuredResult("me/tasks", "sort", "test", "exact_match", 0.25, 8, "python train_sft.py", 0, "cpu")
    prompt = 'Sort the string "cba"\nAnswer:'
    folder = export_text_baseline(
        model,
        char_tokenizer(),
        tmp_path / "text",
        results=[result],
        base_model="meta-llama/Llama-3.2-1B",
        datasets="me/tasks",
        repo_id="me/tiny-text",
        example_prompt=prompt,
        max_new_tokens=5,
        hyperparameters=HYPERPARAMETERS,
    )
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.py")) and "auto_map" not in (folder / "config.json").read_text()
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.license, data.pipeline_tag, data.base_model) == (
        "llama3.2",
        "text-generation",
        "meta-llama/Llama-3.2-1B",
    )
    assert data.hyperparameters == HYPERPARAMETERS and data.datasets == ["me/tasks"] and "custom_code" not in data.tags
    assert data.eval_results[0].metric_value == 0.25 and "| test | exact_match | 0.25 | 8 | 0 |" in card.text
    (generated,) = run_card_snippets(folder, "me/tiny-text", tmp_path)
    here = pipeline("text-generation", model=str(folder))(
        prompt, max_new_tokens=5, do_sample=False, return_full_text=False
    )
    assert generated == here and len(generated[0]["generated_text"]) > 0
