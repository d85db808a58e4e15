"""`export_for_hub` writes a Hub-ready folder (exact file set, parseable card metadata with the measured results),
and `push_to_hub` puts it on a (local) Hub from which a fresh process without this project loads it by repo id."""

import json
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, upload_file
from safetensors import safe_open
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from llama_delta.export import MeasuredResult, export_for_hub, push_to_hub
from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from tests.helpers.configs import COPYING_SLOTS, REMOTE_CODE_FILES, TINY_LLAMA
from tests.helpers.local_hub import local_hub

EXPORT_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    *REMOTE_CODE_FILES,
}
RESULTS = [
    MeasuredResult(
        dataset="local-user/llama-delta-tasks",
        task="arithmetic",
        split="test",
        metric="exact_match",
        value=0.8125,
        num_examples=48,
        command="python train_sft.py --task arithmetic --seed 7 | tee log.txt",
        seed=7,
        machine="test machine A",
    ),
    dict(
        dataset="local-user/llama-delta-tasks",
        task="arithmetic",
        split="ood_length_4",
        metric="element_accuracy",
        value=0.25,
        num_examples=16,
        command="python evaluate.py --split ood_length_4",
        seed=11,
        machine="test machine B",
    ),
]
QUESTIONS = ["What is 7 plus 5?", "What is 3 * 4?"]

# Runs in the fresh process: argv = repo id, output file. Questions are tokenized there by the Hub's tokenizer.
LOAD_SCRIPT = f"""
import sys
try:
    import modeling_llama_delta
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("modeling_llama_delta is importable in the fresh process")
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)  # as the card says
batch = tokenizer({QUESTIONS!r}, return_tensors="pt", padding=True)
with torch.no_grad():
    out = model(**batch)
tensors = {{"input_ids": batch["input_ids"], "answer_logits": out.answer_logits}}
tensors.update({{f"buffer.{{name}}": buffer for name, buffer in model.named_buffers()}})
save_file(tensors, sys.argv[2], metadata={{"solve": "\\t".join(model.solve({QUESTIONS!r}, tokenizer))}})
"""


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character, BOS first: 98 tokens, fits the tiny vocabulary."""
    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2, **{chr(code): code - 29 for code in range(32, 127)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaDeltaConfig(
        **TINY_LLAMA,
        delta_word_size=16,
        delta_memory_size=8,
        delta_max_steps=8,
    )
    return LlamaDeltaForAlgorithmicQA(config).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "tiny-delta"
    return export_for_hub(
        model,
        char_tokenizer(),
        folder,
        results=RESULTS,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        datasets=["local-user/llama-delta-tasks"],
        repo_id="local-user/tiny-delta",
    )


def test_export_file_set(exported):
    assert {path.name for path in exported.iterdir()} == EXPORT_FILES


def test_card_metadata_and_results(exported):
    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.library_name == "transformers"
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "custom_code" in data.tags and data.datasets == ["local-user/llama-delta-tasks"]
    assert data.model_name == "tiny-delta"
    expected = [r if isinstance(r, MeasuredResult) else MeasuredResult(**r) for r in RESULTS]
    assert [
        (e.dataset_type, e.dataset_config, e.dataset_split, e.metric_type, e.metric_value) for e in data.eval_results
    ] == [(r.dataset, r.task, r.split, r.metric, r.value) for r in expected]
    for result in expected:  # every number comes with what it is and how it was measured
        row = next(line for line in card.text.splitlines() if f"| {result.split} | {result.metric} |" in line)
        for value in (result.value, result.num_examples, result.seed, result.machine):
            assert f"| {value} |" in row, (value, row)
        assert result.command.replace("|", "\\|") in row
    assert "`exact_match`: fraction of examples whose whole answer is right" in card.text
    assert 'AutoModel.from_pretrained("local-user/tiny-delta", trust_remote_code=True)' in card.text


def test_card_without_results_claims_none(model, tmp_path):
    folder = export_for_hub(model, char_tokenizer(), tmp_path / "plain")
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results is None and card.data.base_model is None
    assert "no accuracy claim" in card.text


def test_export_refusals(model, tmp_path):
    with pytest.raises(ValueError, match=r"missing \['command', 'machine', 'seed'\]"):
        export_for_hub(
            model,
            char_tokenizer(),
            tmp_path / "a",
            results=[{k: v for k, v in RESULTS[1].items() if k not in ("command", "machine", "seed")}],
        )
    with pytest.raises(ValueError, match="MeasuredResult.value = nan must be a finite number"):
        MeasuredResult(**{**RESULTS[1], "value": float("nan")})
    with pytest.raises(ValueError, match="MeasuredResult.command = '' must be a non-empty string"):
        MeasuredResult(**{**RESULTS[1], "command": ""})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.bin").write_bytes(b"stale")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        export_for_hub(model, char_tokenizer(), tmp_path / "full")
    export_for_hub(model, char_tokenizer(), tmp_path / "full", overwrite=True)
    assert not (tmp_path / "full" / "old.bin").exists()
    with pytest.raises(FileNotFoundError, match=r"missing \['README.md', 'config.json', 'model.safetensors'\]"):
        push_to_hub(tmp_path / "a", "local-user/nothing")


def test_push_and_load_by_repo_id_in_a_fresh_process(model, exported, tmp_path):
    tokenizer = char_tokenizer()
    with local_hub(tmp_path / "hub") as hub:
        repo_id = hub.repo_id("tiny-delta")
        HfApi().create_repo(repo_id)
        stale = tmp_path / "stale.py"
        stale.write_text("raise RuntimeError('a file from an older upload')\n")
        upload_file(path_or_fileobj=str(stale), path_in_repo="stale.py", repo_id=repo_id)
        push_to_hub(exported, repo_id)
        assert set(HfApi().list_repo_files(repo_id)) == EXPORT_FILES  # the stale file went
        assert ModelCard.load(repo_id).data.eval_results[0].metric_value == 0.8125

        # A new interpreter, elsewhere, without this project on its path; the Hub endpoint is inherited.
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        environment.update(
            OMP_NUM_THREADS="1",
            HF_HUB_OFFLINE="0",
            HF_HUB_CACHE=str(tmp_path / "fresh_cache"),
            HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
            TOKENIZERS_PARALLELISM="false",
        )
        assert environment["HF_ENDPOINT"] == hub.endpoint
        (tmp_path / "elsewhere").mkdir()
        result = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, repo_id, "outputs.safetensors"],
            cwd=tmp_path / "elsewhere",
            env=environment,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,  # a "[y/N]" prompt fails at once instead of waiting
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[y/N]" not in result.stdout + result.stderr
    with safe_open(str(tmp_path / "elsewhere" / "outputs.safetensors"), "pt") as outputs:
        tensors = {key: outputs.get_tensor(key) for key in outputs.keys()}
        solved = outputs.metadata()["solve"].split("\t")
    batch = tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    assert torch.equal(tensors["input_ids"], batch["input_ids"])
    with torch.no_grad():
        expected = model(**batch).answer_logits
    torch.testing.assert_close(tensors["answer_logits"], expected, rtol=0, atol=0)
    for name, buffer in model.named_buffers():
        assert torch.equal(tensors[f"buffer.{name}"], buffer), name
    assert solved == model.solve(QUESTIONS, tokenizer)


def test_card_gives_the_token_table_as_its_size(tmp_path):
    config = LlamaDeltaConfig(**TINY_LLAMA, **COPYING_SLOTS, delta_max_steps=8)
    folder = export_for_hub(LlamaDeltaForAlgorithmicQA(config).eval(), char_tokenizer(), tmp_path / "copying")
    text = (folder / "README.md").read_text()
    assert "| `delta_token_values` | 16 tokens (in `config.json`) |" in text and "'10': 0" not in text


def test_card_tokenizer_line_loads_without_a_prompt(exported):
    """The card's `AutoTokenizer` line, run with stdin closed: no trust-remote-code prompt. The bare call (no
    `trust_remote_code`) does prompt, because AutoTokenizer reads config.json, whose auto_map names our code."""
    assert "auto_map" not in json.loads((exported / "tokenizer_config.json").read_text())
    card_line = next(line for line in (exported / "README.md").read_text().splitlines() if "AutoTokenizer.from" in line)
    script = "\n".join(
        [
            "from transformers import AutoTokenizer",
            card_line.replace('"local-user/tiny-delta"', repr(str(exported))),
            "print('CARD LINE LOADED', type(tokenizer).__name__, flush=True)",
            f"AutoTokenizer.from_pretrained({str(exported)!r})",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=exported.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    before, marker, after = result.stdout.partition("CARD LINE LOADED")
    assert marker, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[y/N]" not in before  # input() writes its prompt to stdout
    assert "[y/N]" in after, "the bare AutoTokenizer call no longer prompts: the card's extra argument may go"
