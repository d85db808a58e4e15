"""Export a `LlamaDeltaForAlgorithmicQA` as a Hub-ready folder, and push it.

    from llama_delta.export import MeasuredResult, export_for_hub, push_to_hub
    result = MeasuredResult(dataset="me/llama-delta-tasks", task="sort", split="test", metric="exact_match",
                            value=0.93, num_examples=600, command="python train_sft.py --task sort --seed 0",
                            seed=0, machine="2-core CPU, torch 2.13.0+cpu")
    folder = export_for_hub(model, tokenizer, "outputs/hub/sort", results=[result],
                            base_model="HuggingFaceTB/SmolLM2-135M-Instruct", datasets=["me/llama-delta-tasks"])
    push_to_hub(folder, "me/llama-delta-sort")

The folder holds the safetensors weights, `config.json` with `auto_map`, the flat remote-code files that
`save_pretrained` copies (so `AutoModel.from_pretrained(repo, trust_remote_code=True)` needs only torch and
transformers), the tokenizer, and `README.md`: a model card with Hub metadata (`library_name`, `pipeline_tag`,
`license` (the base model's), `base_model`, `tags` with `custom_code`, `datasets`, `model-index`, the training
`hyperparameters`, `framework_versions`) whose numbers are exactly the `results` passed in. A model with a trainable
library (`delta_trainable_programs`) also gets `decompiled/<program>.asm`: the assembly its trained ROM runs, one
assembly unit per program. `export_text_baseline` writes the plain fine-tuned baseline (a causal LM, no Δ) the same
way, with its own card (`model_card_text_baseline.md`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from transformers import PreTrainedModel

from modeling_llama_delta import LlamaDeltaForAlgorithmicQA

TASK_TYPE = "question-answering"
TASK_NAME = "Algorithmic question answering"
TAGS = ("custom_code", "llama", "llama-delta", "differentiable-computer", "neural-compilation", "algorithmic-reasoning")
# What the metrics of `llama_delta.metrics` mean, for the card.
METRIC_MEANINGS = {
    "exact_match": "fraction of examples whose whole answer is right",
    "element_accuracy": "fraction of answer elements (digits, characters, values) that are right, over all examples",
    "program_accuracy": "fraction of examples whose selected library program is the one the data names (measured only: "
    "the model is trained on answers alone)",
}
# Where `export_for_hub` writes a trainable library's programs as assembly.
DECOMPILED_DIR = "decompiled"
# A folder `push_to_hub` accepts must hold at least these (what `export_for_hub` writes).
REQUIRED_FILES = ("README.md", "config.json", "model.safetensors")
# The card's `license`: a fine-tuned model carries its base model's license. Hub id prefixes (lower case) -> Hub
# license ids; a model trained from scratch is this project's; any other base model gets OTHER_LICENSE, so that
# the card never claims a license the base model may not grant.
PROJECT_LICENSE = "apache-2.0"
BASE_MODEL_LICENSES = {
    "meta-llama/llama-3.2-": "llama3.2",
    "meta-llama/llama-3.1-": "llama3.1",
    "meta-llama/meta-llama-3-": "llama3",
    "huggingfacetb/smollm2-": "apache-2.0",
    "huggingfacetb/smollm-": "apache-2.0",
}
OTHER_LICENSE = "other"
# The packages whose versions the card records (`framework_versions`), as a Trainer card does.
FRAMEWORKS = ("transformers", "torch", "datasets", "tokenizers", "huggingface_hub", "safetensors")


@dataclass(frozen=True)
class MeasuredResult:
    """One evaluation number and how it was measured; the card prints these fields and nothing else.

    dataset: the dataset's Hub id (or name); task: its config (`load_task` name); split: e.g. `test`, `ood_length_16`;
    metric: e.g. `exact_match`; value: the measured number; num_examples: how many examples it is over;
    command: the exact command line that produced it; seed: its random seed; machine: where it ran.
    """

    dataset: str
    task: str
    split: str
    metric: str
    value: float
    num_examples: int
    command: str
    seed: int
    machine: str

    def __post_init__(self) -> None:
        for name in ("dataset", "task", "split", "metric", "command", "machine"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"MeasuredResult.{name} = {getattr(self, name)!r} must be a non-empty string")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"MeasuredResult.value = {self.value!r} must be a finite number")
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int) or self.num_examples < 1:
            raise ValueError(f"MeasuredResult.num_examples = {self.num_examples!r} must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"MeasuredResult.seed = {self.seed!r} must be an integer")

    @classmethod
    def from_mapping(cls, values: Mapping) -> MeasuredResult:
        """From a dict (e.g. a results JSON line); every field is required, unknown keys are refused."""
        names = [field.name for field in fields(cls)]
        missing, unknown = sorted(set(names) - set(values)), sorted(set(values) - set(names))
        if missing or unknown:
            raise ValueError(f"a result needs exactly the fields {names}; missing {missing}, unknown {unknown}")
        return cls(**values)

    def eval_result(self) -> EvalResult:
        return EvalResult(
            task_type=TASK_TYPE,
            task_name=TASK_NAME,
            dataset_type=self.dataset,
            dataset_name=f"{self.dataset} ({self.task})",
            dataset_config=self.task,
            dataset_split=self.split,
            metric_type=self.metric,
            metric_name=self.metric,
            metric_value=self.value,
        )


# The card's Jinja template, rendered by `huggingface_hub.ModelCard.from_template` (variables: `model_card`'s).
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"
# The text baseline's card (`export_text_baseline`): a plain causal LM, no Δ.
TEXT_BASELINE_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_card_text_baseline.md"
TEXT_PIPELINE_TAG = "text-generation"
TEXT_BASELINE_TAGS = ("llama", "llama-delta", "text-baseline", "trl", "sft", "algorithmic-reasoning")


def _program_summary(source: str) -> str:
    """The first `;;` comment line of a library source, without its `name:` prefix."""
    for line in source.splitlines():
        if line.startswith(";;"):
            text = line.lstrip("; ").strip()
            return text.split(":", 1)[1].strip() if ":" in text else text
    return ""


def _table_cells(row: dict) -> dict:
    """Escape `|` so that a command such as `... | tee log` stays in its Markdown table cell."""
    return {key: value.replace("|", "\\|") if isinstance(value, str) else value for key, value in row.items()}


def _delta_settings(model: LlamaDeltaForAlgorithmicQA) -> list[tuple[str, object]]:
    config = model.config
    names = [name for name in config.to_dict() if name.startswith("delta_") and name != "delta_programs"]
    settings = [(name, getattr(config, name)) for name in sorted(names)]
    # The token table can hold tens of thousands of tokens: the card gives its size, config.json the table.
    return [
        (name, f"{len(value)} tokens (in `config.json`)" if name == "delta_token_values" and value else value)
        for name, value in settings
    ]


def base_model_license(base_model: str | None) -> str:
    """The Hub license id of a model fine-tuned from `base_model` (None: trained from scratch)."""
    if base_model is None:
        return PROJECT_LICENSE
    key = base_model.lower()
    return next((name for prefix, name in BASE_MODEL_LICENSES.items() if key.startswith(prefix)), OTHER_LICENSE)


def framework_versions() -> dict[str, str]:
    """Installed versions of `FRAMEWORKS` (those that are installed)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _card_data(
    pipeline_tag: str,
    tags: Sequence[str],
    results: Sequence[MeasuredResult],
    base_model: str | None,
    datasets: Sequence[str],
    model_name: str,
    license: str | None,
    hyperparameters: Mapping[str, object] | None,
) -> ModelCardData:
    """The Hub metadata both cards carry (the Δ model's and the text baseline's)."""
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license or base_model_license(base_model),
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=list(tags),
        metrics=sorted({result.metric for result in results}) or None,
        model_name=model_name,
        eval_results=[result.eval_result() for result in results] or None,
        hyperparameters=dict(hyperparameters) if hyperparameters else None,
        framework_versions=framework_versions(),
    )


def _results_context(results: Sequence[MeasuredResult]) -> dict:
    """The template variables of the results table (both templates print it the same way)."""
    return {
        "results": [_table_cells(asdict(result)) for result in results],
        "metric_meanings": [
            (m, METRIC_MEANINGS[m]) for m in sorted({r.metric for r in results}) if m in METRIC_MEANINGS
        ],
    }


def _empty_folder(out_dir: Path, overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, clear) a non-empty export folder, so that no stale file is ever shipped."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True to replace its contents")
        shutil.rmtree(out_dir)


def model_card(
    model: LlamaDeltaForAlgorithmicQA,
    results: Sequence[MeasuredResult] = (),
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    model_name: str = "llama-delta",
    repo_id: str | None = None,
    license: str | None = None,
    example_question: str = "What is 7 plus 5?",
    code_files: Sequence[str] = (),
    hyperparameters: Mapping[str, object] | None = None,
) -> ModelCard:
    """The model card: Hub metadata (model-index from `results`; `license`, default the base model's
    (`base_model_license`); `pipeline_tag`; the training `hyperparameters` given; `framework_versions`) and a
    description of the model and its numbers."""
    config = model.config
    card_data = _card_data(TASK_TYPE, TAGS, results, base_model, datasets, model_name, license, hyperparameters)
    return ModelCard.from_template(
        card_data,
        template_path=MODEL_CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base_model,
        example_question=example_question,
        delta_settings=_delta_settings(model),
        programs=[(name, _program_summary(source)) for name, source in config.delta_programs.items()],
        **_results_context(results),
        datasets=list(datasets),
        word_size=config.delta_word_size,
        max_value=config.delta_word_size - 1,
        answer_format=config.delta_answer_format,
        max_steps=config.delta_max_steps,
        context=config.max_position_embeddings,
        code_files=list(code_files),
    )


def _export_inputs(out_dir, overwrite: bool, results, datasets, repo_id: str | None, model_name: str | None):
    """What both exports start from: an empty `out_dir`, results as `MeasuredResult`s, datasets as a list, and the
    card's model name (default: the repo's name, else the folder's)."""
    out_dir = Path(out_dir)
    _empty_folder(out_dir, overwrite)
    results = [r if isinstance(r, MeasuredResult) else MeasuredResult.from_mapping(r) for r in results or ()]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or ())
    return out_dir, results, datasets, model_name or (repo_id.split("/")[-1] if repo_id else out_dir.resolve().name)


def export_for_hub(
    model: LlamaDeltaForAlgorithmicQA,
    tokenizer,
    out_dir: str | os.PathLike,
    results: Sequence[MeasuredResult | Mapping] | None = None,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str | None = None,
    example_question: str = "What is 7 plus 5?",
    hyperparameters: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` and `tokenizer` to `out_dir` as a Hub repository's contents; returns the folder.

    results: measured numbers (`MeasuredResult`s or dicts with its fields), written to the card's model-index and
        results table exactly as given; None: the card claims no results.
    base_model / datasets: Hub ids for the card's metadata (the backbone's checkpoint; the training data).
    repo_id: where the folder will live, for the card's usage snippet; model_name: the card's title and
        model-index name (default: the repo's name, else the folder's).
    license: the card's Hub license id (default: the base model's, `base_model_license`).
    hyperparameters: how the model was trained, for the card's metadata (e.g. transformers'
        `modelcard.extract_hyperparameters_from_trainer(trainer)`).
    overwrite: replace an existing non-empty `out_dir` (else refused, so no stale file is ever shipped).
    """
    out_dir, results, datasets, model_name = _export_inputs(out_dir, overwrite, results, datasets, repo_id, model_name)
    model.verify_library()  # never ship a ROM that disagrees with its sources

    model.save_pretrained(out_dir)  # safetensors + config.json (auto_map) + the flat remote-code files
    config = json.loads((out_dir / "config.json").read_text())
    if "AutoModel" not in config.get("auto_map", {}):
        raise RuntimeError(
            f"{out_dir}/config.json has no auto_map: {type(model).__name__} is not registered for the Auto classes "
            "(importing `modeling_llama_delta` registers it)"
        )
    code_files = sorted(path.name for path in out_dir.glob("*.py"))
    if model.config.delta_trainable_programs:
        write_decompiled_programs(model, out_dir / DECOMPILED_DIR)
    tokenizer.save_pretrained(out_dir)
    card = model_card(
        model,
        results,
        base_model=base_model,
        datasets=datasets,
        model_name=model_name,
        repo_id=repo_id,
        license=license,
        example_question=example_question,
        code_files=code_files,
        hyperparameters=hyperparameters,
    )
    card.save(out_dir / "README.md")
    return out_dir


def export_text_baseline(
    model: PreTrainedModel,
    tokenizer,
    out_dir: str | os.PathLike,
    results: Sequence[MeasuredResult | Mapping] | None = None,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    license: str | None = None,
    example_prompt: str = "What is 7 plus 5?\nAnswer:",
    max_new_tokens: int = 16,
    hyperparameters: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the plain fine-tuned baseline (`train_sft.py --method text_sft`: a causal LM that writes the answer) and
    its tokenizer to `out_dir` as a Hub repository's contents, with a card rendered from `TEXT_BASELINE_CARD_TEMPLATE`
    (metadata as `export_for_hub`'s, `pipeline_tag` text-generation); returns the folder. `push_to_hub` uploads it.

    example_prompt / max_new_tokens: the card's usage snippet (the prompt as the baseline was trained on, the number
    of tokens its longest answer needs); the other arguments are `export_for_hub`'s.
    """
    out_dir, results, datasets, model_name = _export_inputs(out_dir, overwrite, results, datasets, repo_id, model_name)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    card_data = _card_data(
        TEXT_PIPELINE_TAG, TEXT_BASELINE_TAGS, results, base_model, datasets, model_name, license, hyperparameters
    )
    card = ModelCard.from_template(
        card_data,
        template_path=TEXT_BASELINE_CARD_TEMPLATE,
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base_model,
        example_prompt=example_prompt,
        max_new_tokens=max_new_tokens,
        **_results_context(results),
        datasets=datasets,
        context=model.config.max_position_embeddings,
    )
    card.save(out_dir / "README.md")
    return out_dir


def write_decompiled_programs(model: LlamaDeltaForAlgorithmicQA, folder: str | os.PathLike) -> list[Path]:
    """Write `folder/<program>.asm` for every library program: the assembly the model's ROM runs (for a trainable
    ROM, what training made of the program; `assemble` reads each file back into its arg-max ROM)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    written = []
    for name, text in model.delta_head.machine.decompile().items():
        header = (
            f";; {name}: decompiled from the model's ROM (the arg-max of every field), n = {config.delta_word_size}, "
            f"{config.delta_num_registers} registers.\n"
        )
        path = folder / f"{name}.asm"
        path.write_text(header + text)
        written.append(path)
    return written


def push_to_hub(
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload llama-delta model",
) -> CommitInfo:
    """Upload an `export_for_hub` (or `export_text_baseline`) folder to `repo_id` (created if needed, `private` if
    asked) in one commit, with `token` (default: the logged-in one), to the branch `revision` (created from main if
    needed; default main).

    The branch ends up holding exactly the folder's files: files left from an earlier upload are deleted in the
    same commit (so a stale weight or code file can never be loaded alongside the new ones).
    """
    out_dir = Path(out_dir)
    missing = [name for name in REQUIRED_FILES if not (out_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{out_dir} is not an export_for_hub folder: missing {missing}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=out_dir,
        commit_message=commit_message,
        repo_type="model",
        revision=revision,
        delete_patterns="*",  # files uploaded in this commit are kept; everything else goes
    )


__all__ = [
    "DECOMPILED_DIR",
    "METRIC_MEANINGS",
    "MODEL_CARD_TEMPLATE",
    "TEXT_BASELINE_CARD_TEMPLATE",
    "MeasuredResult",
    "base_model_license",
    "export_for_hub",
    "export_text_baseline",
    "framework_versions",
    "model_card",
    "push_to_hub",
    "write_decompiled_programs",
]
