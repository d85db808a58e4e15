"""The local Hub server must carry the real huggingface_hub / transformers / datasets clients through a round trip."""

import os

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, HfFileSystem, constants, hf_hub_download, snapshot_download, upload_folder
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from transformers import LlamaForCausalLM

from llama_delta.backbones import load_llama_backbone, minimal_llama_config
from tests.helpers.local_hub import NAMESPACE, local_hub


@pytest.fixture
def hub(tmp_path):
    with local_hub(tmp_path / "hub") as hub:
        yield hub


def write_files(root, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)


def read_files(root) -> dict[str, bytes]:
    """Every file below `root` but the `.cache/` bookkeeping that `snapshot_download(local_dir=...)` adds."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.relpath(os.path.join(folder, name), root)
            if not path.startswith(".cache"):
                files[path] = open(os.path.join(folder, name), "rb").read()
    return files


def test_push_to_hub_then_from_pretrained(hub):
    torch.manual_seed(0)
    config = minimal_llama_config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    model = LlamaForCausalLM(config).eval()
    commit = model.push_to_hub("tiny-llama")  # no namespace: the server puts it under its user
    repo_id = f"{NAMESPACE}/tiny-llama"
    assert commit.oid == HfApi().model_info(repo_id).sha
    assert {"config.json", "model.safetensors"} <= set(HfApi().list_repo_files(repo_id))
    loaded = LlamaForCausalLM.from_pretrained(repo_id).eval()
    backbone = load_llama_backbone(repo_id).eval()  # the Hub-id path of the backbone loader
    input_ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = model(input_ids).logits
        for other in (loaded, backbone):
            assert other.state_dict().keys() == model.state_dict().keys()
            assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())
            torch.testing.assert_close(other(input_ids).logits, expected, rtol=0, atol=0)


def test_upload_folder_snapshot_round_trip(hub, tmp_path):
    repo_id = hub.repo_id("files")
    HfApi().create_repo(repo_id)
    with pytest.raises(HfHubHTTPError, match="409"):
        HfApi().create_repo(repo_id)
    HfApi().create_repo(repo_id, exist_ok=True)
    first = {
        "README.md": b"# files\n",
        "notes/a.txt": "unicode ✓ text\n".encode(),
        "weights/deep/w.bin": bytes(range(256)) * 40,  # goes through LFS
        "empty.txt": b"",
    }
    write_files(tmp_path / "v1", first)
    first_commit = upload_folder(repo_id=repo_id, folder_path=tmp_path / "v1").oid
    assert read_files(snapshot_download(repo_id)) == first

    second = {"README.md": b"# files, v2\n", "weights/deep/w.bin": first["weights/deep/w.bin"]}
    write_files(tmp_path / "v2", second)
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "v2", delete_patterns=["notes/*", "empty.txt"])
    assert read_files(snapshot_download(repo_id, local_dir=tmp_path / "download")) == second
    assert sorted(HfApi().list_repo_files(repo_id)) == sorted(second)
    old_readme = hf_hub_download(repo_id, "README.md", revision=first_commit)
    assert open(old_readme, "rb").read() == first["README.md"]

    # Byte ranges, as HfFileSystem reads files.
    blob = first["weights/deep/w.bin"]
    assert HfFileSystem().cat_file(f"{repo_id}/weights/deep/w.bin", start=1000, end=1300) == blob[1000:1300]
    folders = [entry.path for entry in HfApi().list_repo_tree(repo_id) if not hasattr(entry, "size")]
    assert folders == ["weights"]


def test_missing_repo_and_file_raise_hub_errors(hub):
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub.repo_id("nope"), "config.json")
    HfApi().create_repo(hub.repo_id("empty"))
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub.repo_id("empty"), "config.json")


def test_dataset_push_and_load(hub, tmp_path):
    from datasets import Dataset, DatasetDict, load_dataset

    original = DatasetDict(
        train=Dataset.from_dict(
            {"prompt": ["What is 17 times 5?", 'Sort the string "dlifdbabejld"'], "answer": [85, 1]}
        ),
        test=Dataset.from_dict({"prompt": ["What is 2 plus 2?"], "answer": [4]}),
    )
    original.push_to_hub("tiny-tasks")
    repo_id = hub.repo_id("tiny-tasks")
    assert any(path.endswith(".parquet") for path in HfApi().list_repo_files(repo_id, repo_type="dataset"))
    loaded = load_dataset(repo_id, cache_dir=str(tmp_path / "datasets_cache"))
    assert set(loaded) == {"train", "test"}
    for split in original:
        assert loaded[split].to_dict() == original[split].to_dict()


def test_settings_restored_after_the_block(tmp_path):
    endpoint, cache, api_endpoint = constants.ENDPOINT, constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint
    environment = os.environ.get("HF_ENDPOINT")
    with local_hub(tmp_path) as hub:
        assert constants.ENDPOINT == huggingface_hub.hf_api.api.endpoint == os.environ["HF_ENDPOINT"] == hub.endpoint
        assert constants.HF_HUB_CACHE == str(tmp_path / "hf_cache")
    assert (constants.ENDPOINT, constants.HF_HUB_CACHE, huggingface_hub.hf_api.api.endpoint) == (
        endpoint,
        cache,
        api_endpoint,
    )
    assert os.environ.get("HF_ENDPOINT") == environment
