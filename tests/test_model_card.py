"""The rendered card's metadata: the license follows the base model, `pipeline_tag`, the training hyperparameters
and the framework versions; `push_to_hub` passes `private`, `token` and `revision` on to the Hub client."""

import importlib.metadata

import pytest
import torch
from huggingface_hub import ModelCard

from llama_delta import export
from llama_delta.export import base_model_license, export_for_hub, push_to_hub
from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from tests.helpers.configs import TINY_LLAMA
from tests.test_export import char_tokenizer

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
