"""train_sft.py end to end on tiny configurations (its recipe, `llama_delta.sft.main`, in-process; torchrun runs the
script itself), plus the pieces it is built from (task settings, collator, checks)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

from llama_delta import sft
from llama_delta.collator import DeltaCollator
from llama_delta.plotting import plot_task_results
from llama_delta.report import measured_results, results_table, task_results, task_table
from llama_delta.rom_check import assert_library_unchanged, library_snapshot
from llama_delta.task_settings import TASK_LIBRARY, delta_settings, elements_per_token, input_spans, load_task_data
from llama_delta.text_baseline import parse_answer_text
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta import LlamaDeltaForAlgorithmicQA, assemble
from modeling_llama_delta.compiler import compile_programs
from modeling_llama_delta.library import assemble_library, step_bound

ROOT = Path(__file__).resolve().parents[1]
TINY_BACKBONE = json.dumps(
    {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
)
EXPORT_FILES = ("README.md", "config.json", "model.safetensors", "modeling_llama_delta.py", "tokenizer.json")


def tiny_args(tmp_path: Path, task: str, *extra: str) -> list[str]:
    return [
        "--task", task,
        "--backbone_kwargs", TINY_BACKBONE,
        "--output_dir", str(tmp_path / "run"),
        "--data_cache_dir", str(tmp_path / "data"),
        "--num_train_epochs", "1",
        "--save_strategy", "no",
        "--logging_steps", "5",
        "--per_device_train_batch_size", "16",
        *extra,
    ]  # fmt: skip


def check_results(report: dict, out_dir: Path, splits: set[str]) -> None:
    saved = json.loads((out_dir / "results.json").read_text())
    assert set(saved["results"]) == splits
    for split, metrics in saved["results"].items():
        scores = {key: value for key, value in metrics.items() if key.startswith(("exact_match", "element_accuracy"))}
        assert scores and all(0.0 <= value <= 1.0 for value in scores.values()), (split, scores)
        assert metrics["num_examples"] == saved["splits"][split]
        assert all(key and not key.startswith(split) for key in metrics), sorted(metrics)  # no prefix, no epoch
    assert saved["command"].startswith("python train_sft.py --task") and saved["seed"] == 0
    assert report["results"] == saved["results"]


def test_arithmetic_end_to_end(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from llama_delta import export
    from tests.test_model_card import RecordingApi

    monkeypatch.setattr(export, "HfApi", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    push = ["--push_to_hub", "--hub_model_id", "me/tiny", "--hub_private_repo", "True", "--hub_token", "hf_x"]
    report = sft.main(tiny_args(tmp_path, "arithmetic", "--dataset_size", "300", *push, "--hub_revision", "v2"))
    out = tmp_path / "run"
    check_results(report, out, {"test"})
    hub = out / "hub"
    assert all((hub / name).is_file() for name in EXPORT_FILES)
    card = (hub / "README.md").read_text()
    assert f"{report['results']['test']['exact_match']}" in card and "python train_sft.py --task arithmetic" in card
    data = ModelCard.load(hub / "README.md").data
    assert data.license == "apache-2.0" and data.base_model is None  # from scratch: the project's license
    assert data.hyperparameters["learning_rate"] == 1e-2 and data.hyperparameters["num_epochs"] == 1
    assert data.hyperparameters["train_batch_size"] == 16 and data.hyperparameters["seed"] == 0
    assert RecordingApi.calls[0] == ("HfApi", "hf_x") and RecordingApi.calls[1][2]["private"] is True
    assert RecordingApi.calls[2:] == [
        ("create_branch", "me/tiny", {"branch": "v2", "exist_ok": True, "repo_type": "model"}),
        ("upload_folder", "me/tiny", "v2", "*"),
    ]
    # The exported library is the library as compiled from source: training never touched it.
    model = LlamaDeltaForAlgorithmicQA.from_pretrained(hub)
    programs = assemble_library(model.config.delta_programs, n=128, num_registers=8)
    assert torch.equal(model.delta_head.machine.rom, compile_programs(list(programs.values())))
    assert model.config.delta_programs.keys() == {"add", "sub", "mul", "div", "mod", "min", "max"}
    # The reported selection accuracy is the exported model's own: the program solve says it ran, against the row's.
    test = load_task_data("arithmetic", cache_dir=tmp_path / "data", dataset_size=300)["test"]
    questions, tokenizer = list(test["question"]), load_llama3_tokenizer()
    details = model.solve(questions, tokenizer, return_details=True, refuse=False)
    # "(mod 128)" is no input: what is refused is what the 1-epoch model is unsure of (probability < 0.5)
    assert all("probability" in detail["refusal"] for detail in details if detail["refusal"])
    unsure = LlamaDeltaForAlgorithmicQA.from_pretrained(hub, delta_min_answer_probability=0.0)
    details = unsure.solve(questions, tokenizer, return_details=True, refuse=False)
    assert not [detail["refusal"] for detail in details if detail["refusal"]]
    chosen = [detail["program"] == program for detail, program in zip(details, test["program"], strict=True)]
    assert math.isclose(report["results"]["test"]["program_accuracy"], sum(chosen) / len(chosen))


def test_train_from_an_exported_folder_and_a_hub_repo(tmp_path):
    """`--dataset_name` trains on a `data_builders.export` folder (two tasks, one config each) or on that data pushed
    to a dataset repo (the local Hub), not on freshly generated data: the run's splits are the export's."""
    from huggingface_hub import ModelCard

    from data_builders import export_dataset
    from tests.helpers.local_hub import local_hub

    folder = tmp_path / "tasks"
    sort = {"lengths": (3,), "ood_lengths": (4,), "examples_per_length": 40, "ood_examples_per_length": 16}
    with local_hub(tmp_path / "hub") as hub:
        repo = hub.repo_id("llama-delta-tasks")
        exported = {
            "arithmetic": export_dataset("arithmetic", folder, cache_dir=tmp_path / "export", size=200, seed=3),
            "sort": export_dataset("sort", folder, push_to=repo, cache_dir=tmp_path / "export", **sort),
        }
        from_repo = sft.main(tiny_args(tmp_path / "repo", "sort", "--dataset_name", repo))
    from_folder = sft.main(tiny_args(tmp_path / "folder", "arithmetic", "--dataset_name", str(folder)))
    for report, task, source in [(from_folder, "arithmetic", str(folder)), (from_repo, "sort", repo)]:
        assert report["splits"] == exported[task].num_rows and report["dataset"] == source
        run = tmp_path / ("folder" if task == "arithmetic" else "repo") / "run"
        check_results(report, run, set(exported[task]) - {"train", "validation"})
        card = ModelCard.load(run / "hub" / "README.md").data
        assert card.datasets == [source] and card.eval_results[0].dataset_type == source
    with pytest.raises(SystemExit, match="--dataset_size set how the data is generated"):
        sft.parse_args(["--task", "arithmetic", "--dataset_name", str(folder), "--dataset_size", "10"])
    # datasets' own error names the folder's configs
    with pytest.raises(ValueError, match=r"'fibonacci' not found. Available: \['arithmetic', 'sort'\]"):
        sft.main(tiny_args(tmp_path / "missing", "fibonacci", "--dataset_name", str(folder)))


def test_trainable_programs_end_to_end(tmp_path):
    extra = ["--dataset_size", "100", "--trainable_programs", "--program_sharpness", "8"]
    sft.main(tiny_args(tmp_path, "arithmetic", *extra))
    hub = tmp_path / "run" / "hub"
    model = LlamaDeltaForAlgorithmicQA.from_pretrained(hub)
    config, machine = model.config, model.delta_head.machine
    assert config.delta_trainable_programs and config.delta_program_sharpness == 8.0
    programs = assemble_library(config.delta_programs, n=128, num_registers=8)
    assert not torch.equal(machine.rom_logits, 8.0 * compile_programs(list(programs.values())))  # it trained
    decompiled = model.delta_head.machine.decompile()
    for name in config.delta_programs:  # the export's programs are what the trained ROM runs, as assembly
        text = (hub / "decompiled" / f"{name}.asm").read_text()
        assert text.endswith(decompiled[name]) and name in assemble(text, 128, 8).functions


def test_count_end_to_end_with_heldout_phrasings(tmp_path):
    """A task new with the calling convention (the character in r0, the string in memory), evaluated on its
    held-out phrasings too."""
    extra = ["--lengths", "3", "--ood_lengths", "4", "--dataset_size", "40", "--ood_size", "8"]
    report = sft.main(tiny_args(tmp_path, "count", *extra, "--dataset_kwargs", '{"heldout_phrasing_size": 8}'))
    check_results(report, tmp_path / "run", {"test", "heldout_phrasing", "ood_length_4"})
    delta = report["delta"]
    assert delta["programs"] == ["count"] and delta["delta_input_registers"] == 1
    assert delta["delta_answer_source"] == "registers" and delta["delta_memory_size"] == 5  # length 4 + terminator


def test_one_model_end_to_end(tmp_path):
    """`--task all` on three of the mixture's tasks: one checkpoint holding every program they need, the mixed parse,
    answers in registers and in memory, program accuracy per task, the per-task plot and card rows."""
    tasks = '{"tasks": ["arithmetic", "sort", "addition"], "heldout_phrasing_size": 6}'
    extra = ["--dataset_size", "30", "--ood_size", "3", "--dataset_kwargs", tasks, "--max_test_samples", "24"]
    report = sft.main(tiny_args(tmp_path, "all", *extra))
    out = tmp_path / "run"
    ood = {f"sort_ood_length_{n}" for n in (24, 48)} | {f"addition_ood_length_{n}" for n in (16, 32)}
    check_results(report, out, {"test", "heldout_phrasing"} | ood)
    delta = report["delta"]
    assert delta["programs"] == sorted(TASK_LIBRARY["all"]) and len(delta["programs"]) == 14  # the whole library
    assert delta["delta_parse_mode"] == "mixed" and delta["delta_answer_source"] == "program"
    assert delta["delta_program_choice"] == "enumerate" and delta["delta_min_answer_probability"] == 0.5
    test = report["results"]["test"]
    assert {f"program_accuracy/task={task}" for task in ("arithmetic", "sort", "addition")} <= set(test)
    assert (out / "tasks.png").stat().st_size > 0
    card = (out / "hub" / "README.md").read_text()
    assert "| sort | test | program_accuracy |" in card and "| all | test | exact_match |" in card


def test_sort_end_to_end(tmp_path):
    extra = ["--lengths", "3", "--ood_lengths", "4", "--dataset_size", "40", "--ood_size", "16"]
    report = sft.main(tiny_args(tmp_path, "sort", *extra))
    check_results(report, tmp_path / "run", {"test", "ood_length_4"})
    delta = report["delta"]
    assert delta["programs"] == ["sort"] and delta["delta_parse_mode"] == "tokens"
    assert delta["delta_memory_size"] == 5 and delta["delta_answer_length"] == 4  # length 4 + its terminator
    assert delta["max_steps"] == {
        "train": step_bound("sort", 3),
        "validation": step_bound("sort", 3),
        "test": step_bound("sort", 3),
        "ood_length_4": step_bound("sort", 4),
    }
    config = json.loads((tmp_path / "run" / "hub" / "config.json").read_text())
    assert config["delta_max_steps"] == step_bound("sort", 4)  # the export handles the held-out length


def test_text_sft_baseline(tmp_path, capsys, monkeypatch):
    """The baseline runs, prints beside a Δ run's results, and is exported (its own card) and pushed like Δ."""
    from huggingface_hub import ModelCard

    from llama_delta import export
    from tests.test_model_card import RecordingApi

    monkeypatch.setattr(export, "HfApi", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    delta = {"method": "delta", "results": {"test": {"exact_match": 0.125, "element_accuracy": 0.5, "num_examples": 8}}}
    (tmp_path / "delta.json").write_text(json.dumps(delta))
    extra = ["--dataset_size", "100", "--method", "text_sft", "--compare_with", str(tmp_path / "delta.json")]
    report = sft.main(tiny_args(tmp_path, "arithmetic", *extra, "--push_to_hub", "--hub_model_id", "me/tiny-text"))
    check_results(report, tmp_path / "run", {"test"})
    hub = tmp_path / "run" / "hub"
    assert report["method"] == "text_sft" and (hub / "model.safetensors").is_file() and not list(hub.glob("*.py"))
    card = ModelCard.load(hub / "README.md")
    assert card.data.pipeline_tag == "text-generation" and card.data.license == "apache-2.0"  # scratch: ours
    assert card.data.hyperparameters["learning_rate"] == 1e-2 and card.data.hyperparameters["num_epochs"] == 1
    assert card.data.eval_results[0].metric_value == report["results"]["test"]["exact_match"]
    assert 'pipeline("text-generation", model="me/tiny-text")' in card.text and "\\nAnswer:" in card.text
    assert [call[0] for call in RecordingApi.calls] == ["HfApi", "create_repo", "upload_folder"]
    printed = capsys.readouterr().out
    assert "text_sft exact" in printed and "delta exact" in printed and "12.50%" in printed  # side by side


def test_learning_curves_from_a_tiny_run(tmp_path):
    """results.json keeps the Trainer's log history; learning_curves.png draws it; `--report_to tensorboard` writes
    event files (with the optional `tracking` extra; without it, the run is refused with the extra's name)."""
    import matplotlib.image

    args = tiny_args(tmp_path, "arithmetic", "--dataset_size", "300", "--num_train_epochs", "2", "--logging_steps", "2")
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(SystemExit, match="needs the optional `tracking` extra: bash setup.sh tracking"):
            sft.main([*args, "--report_to", "tensorboard"])
    else:
        args += ["--report_to", "tensorboard"]
    report = sft.main(args)
    history = json.loads((tmp_path / "run" / "results.json").read_text())["log_history"]
    assert history == report["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    evaluations = [entry for entry in history if "eval_exact_match" in entry]
    assert len(losses) >= 4 and all(math.isfinite(loss) for loss in losses)
    assert [entry["epoch"] for entry in evaluations] == [1.0, 2.0]  # validation after each epoch
    assert {"eval_exact_match/operation=add", "eval_exact_match/operation=div"} <= evaluations[0].keys()
    assert any("test_exact_match" in entry for entry in history)  # the test split's evaluation, after training
    image = matplotlib.image.imread(report["learning_curves"])
    assert image.shape[:2] == (770, 990) and image.std() > 0  # 9 x 7 inches at 110 dpi, two panels drawn
    if "tensorboard" in args:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = sorted((tmp_path / "run" / "runs").glob("*/events.out.tfevents.*"))
        scalars = {tag for path in events for tag in EventAccumulator(str(path)).Reload().Tags()["scalars"]}
        assert {"train/loss", "eval/exact_match", "eval/exact_match/operation=add"} <= scalars


@pytest.mark.parametrize(
    ("flags", "metric", "greater", "load_best"),
    [
        ([], "exact_match", True, True),  # the preset saves per epoch: keep the best epoch by exact match
        (["--metric_for_best_model", "loss"], "loss", False, True),  # the user's metric is kept
        (
            ["--metric_for_best_model", "element_accuracy", "--greater_is_better", "False"],
            "element_accuracy",
            False,
            True,
        ),
        (["--save_strategy", "no"], None, None, False),  # no checkpoints to go back to
        (["--save_strategy", "no", "--early_stopping_patience", "2"], "exact_match", True, False),
        (["--keep_best_epoch", "False"], None, None, False),
    ],
)
def test_best_epoch_respects_the_users_metric(flags, metric, greater, load_best, capsys):
    args, _, training = sft.parse_args(["--task", "sort", *flags])
    sft.choose_best_epoch(args, training, has_validation=True)
    assert (training.metric_for_best_model, training.greater_is_better) == (metric, greater)
    assert training.load_best_model_at_end == load_best
    printed = capsys.readouterr().out
    assert ("keep_best_epoch: off for this run" in printed) == (flags[:2] == ["--save_strategy", "no"])
    if metric:
        assert f"best epoch by eval_{metric}" in printed
    args, _, training = sft.parse_args(["--task", "sort", "--eval_strategy", "no", "--early_stopping_patience", "1"])
    with pytest.raises(SystemExit, match="--early_stopping_patience needs a validation split"):
        sft.choose_best_epoch(args, training, has_validation=True)


def test_early_stopping_and_checkpoints_with_the_tokenizer(tmp_path):
    """With the learning rate 0 validation never improves: patience 1 stops after the second of 6 epochs. Every
    checkpoint carries the tokenizer (`processing_class`)."""
    extra = ["--dataset_size", "300", "--num_train_epochs", "6", "--learning_rate", "0", "--save_strategy", "epoch"]
    report = sft.main(tiny_args(tmp_path, "arithmetic", *extra, "--early_stopping_patience", "1"))
    evaluations = [entry["epoch"] for entry in report["log_history"] if "eval_exact_match" in entry]
    assert evaluations == [1.0, 2.0]
    (checkpoint,) = (tmp_path / "run").glob("checkpoint-*")  # save_total_limit 1, the best is the first
    assert {"tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}


def test_peft_and_resume(tmp_path):
    args = tiny_args(tmp_path, "arithmetic", "--dataset_size", "200", "--use_peft", "--save_strategy", "epoch")
    first = sft.main(args)
    assert first["optimizer_steps"] > 0 and (tmp_path / "run" / "checkpoint-8").is_dir()
    # Resuming with one more epoch continues from the saved step instead of starting over.
    again = sft.main([*args, "--num_train_epochs", "2", "--resume_from_checkpoint", "last"])
    assert again["optimizer_steps"] == 2 * first["optimizer_steps"]
    assert (tmp_path / "run" / "hub" / "model.safetensors").is_file()


def test_peft_exports_an_adapter_that_reproduces_the_merged_model(tmp_path):
    """`--use_peft` on a pretrained backbone (a tiny saved Llama): the export holds the merged model and, in
    `adapter/`, the trained LoRA adapter with the Δ head; `PeftModel.from_pretrained` puts it on a model built from the
    same backbone, and gives the merged model's answer log-probabilities."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from llama_delta.backbones import minimal_llama_config
    from llama_delta.build import DELTA_FIELDS, build_delta_model

    backbone, tokenizer = tmp_path / "backbone", load_llama3_tokenizer()
    LlamaForCausalLM(minimal_llama_config(**json.loads(TINY_BACKBONE))).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    args = tiny_args(tmp_path, "arithmetic", "--dataset_size", "200", "--use_peft", "--lora_r", "4")
    args = [arg for arg in args if arg not in ("--backbone_kwargs", TINY_BACKBONE)]  # from_pretrained kwargs now
    report = sft.main([*args, "--model_name_or_path", str(backbone)])
    hub = tmp_path / "run" / "hub"
    assert report["adapter_dir"] == str(hub / "adapter")
    adapter = load_file(hub / "adapter" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b)  # trained (LoRA's B starts at zero)
    assert any(name.startswith("base_model.model.delta_head.") for name in adapter)
    merged = LlamaDeltaForAlgorithmicQA.from_pretrained(hub).eval()
    base = build_delta_model(str(backbone), **{name: getattr(merged.config, name) for name in DELTA_FIELDS}).eval()
    questions = ["What is 17 times 5?", "What is 100 minus 58?", "What is 9 plus 30?"]
    batch = tokenizer(questions, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = merged(**batch).answer_logits
        adapted = PeftModel.from_pretrained(base, hub / "adapter").eval()
        torch.testing.assert_close(adapted(**batch).answer_logits, expected, atol=1e-5, rtol=1e-5)
        with adapted.disable_adapter():  # the backbone and Δ head it was built with answer otherwise
            assert not torch.allclose(adapted(**batch).answer_logits, expected, atol=1e-3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "juggling"], "invalid choice: 'juggling'"),
        (["--task", "sort", "--preset", "huge"], "unknown preset 'huge'"),
        (["--task", "arithmetic", "--lengths", "4"], "--lengths does not apply to task 'arithmetic'"),
    ],
)
def test_argument_errors_are_clear(argv, message, capsys, tmp_path):
    with pytest.raises((SystemExit, ValueError)) as error:
        sft.main([*argv, "--output_dir", str(tmp_path), "--data_cache_dir", str(tmp_path)])
    assert message in str(error.value) + capsys.readouterr().err


def test_preset_and_flags():
    args, model_args, training = sft.parse_args(["--task", "sort", "--learning_rate", "0.5", "--lengths", "5", "6"])
    assert training.learning_rate == 0.5 and args.lengths == [5, 6]  # later flags win
    assert training.per_device_train_batch_size == 32 and model_args.model_name_or_path == "scratch"  # the preset
    assert not model_args.use_peft and len(model_args.lora_target_modules) == 7  # trl's ModelConfig, our defaults
    assert args.ood_lengths == [16] and training.output_dir == "runs/tiny-sort-delta"  # its sort budget
    _, model_args, training = sft.parse_args(["--task", "sort", "--preset", "llama-3.2-1b"])
    assert model_args.model_name_or_path == "meta-llama/Llama-3.2-1B"
    assert training.learning_rate == 1e-5 and training.per_device_train_batch_size == 2
    assert training.bf16 == torch.cuda.is_available()  # bf16 on GPU only


def test_sort_settings_fit_every_split(tmp_path):
    tokenizer = load_llama3_tokenizer()
    data = load_task_data("sort", cache_dir=str(tmp_path), lengths=[5], ood_lengths=[7], dataset_size=50, ood_size=20)
    settings = delta_settings("sort", data, tokenizer)
    config = settings.delta_config
    assert config["delta_memory_size"] == config["delta_input_cells"] == 8 and config["delta_answer_length"] == 7
    assert config["delta_max_steps"] == step_bound("sort", 7) == settings.max_steps["ood_length_7"]
    # delta_elements_per_token: the most string characters one token spells, counted from the token strings.
    most = 0
    for question in [q for split in data.values() for q in split["question"]]:
        quoted = range(question.index('"') + 1, question.rindex('"'))
        position = 0
        for piece in tokenizer.tokenize(question):
            width = len(piece.replace("Ġ", " "))  # byte-level BPE: ASCII pieces are the text, Ġ a space
            most = max(most, sum(i in quoted for i in range(position, position + width)))
            position += width
    assert elements_per_token(datasets.concatenate_datasets(list(data.values())), tokenizer) == most >= 2
    spaced = load_task_data("sort_spaced", cache_dir=str(tmp_path), lengths=[5], ood_lengths=[], dataset_size=30)
    assert elements_per_token(spaced["train"], tokenizer) == 1


def test_input_spans_find_the_input_however_it_is_quoted():
    """`elements_per_token` and the separators read the input where the question writes it, from the row's memory:
    in either quote or none, spaced out (sort_spaced), with spaces of its own, or as two numerals (addition)."""
    string = [ord(c) for c in "ab cab"] + [0]
    for question, span in [
        ('Sort the string "ab cab"', (17, 23)),
        ("sort 'ab cab', please", (6, 12)),
        ("Reverse the string a b   c a b", (19, 30)),
    ]:
        assert input_spans(question, string) == [span], question
    assert input_spans("How long is abc in alphabet?", [97, 98, 99, 0]) == [(12, 15)]  # not the "ab" of "alphabet"
    numerals = [ord(c) for c in "12"] + [0] + [ord(c) for c in "312"] + [0]
    assert input_spans("Add 12 and 312.", numerals) == [(4, 6), (11, 14)]


def test_collator_pads_labels():
    tokenizer = load_llama3_tokenizer()
    rows = [{"question": 'Sort the string "ba"', "answer_ids": [97, 98]}, {"question": "x", "answer_ids": [5]}]
    batch = DeltaCollator(tokenizer, answer_length=3)(rows)
    assert batch["labels"].tolist() == [[97, 98, -100], [5, -100, -100]]
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["attention_mask"][1].sum() < 6
    with pytest.raises(ValueError, match="delta_answer_length"):
        DeltaCollator(tokenizer, answer_length=1)(rows)


def test_library_check_detects_a_change():
    from llama_delta.build import build_delta_model

    model = build_delta_model(None, backbone_kwargs=json.loads(TINY_BACKBONE) | {"vocab_size": 64})
    snapshot = library_snapshot(model)
    assert_library_unchanged(model, snapshot)
    model.delta_head.machine.rom[0, 0] = model.delta_head.machine.rom[0, 1]
    with pytest.raises(AssertionError, match="changed during training"):
        assert_library_unchanged(model, snapshot)


def test_answer_text_and_table():
    assert parse_answer_text(" abc", "string", 3) == [97, 98, 99]
    assert parse_answer_text("1234", "digits", 5) == [48, 49, 50, 51, 52]  # zero-padded to the L+1 digits
    assert parse_answer_text("123", "digits", 2) == []
    assert parse_answer_text("12 x", "integers", 1) == [12] and parse_answer_text("none", "digits", 2) == []
    table = results_table(
        {"delta": {"test": {"exact_match": 0.5, "element_accuracy": 0.75, "num_examples": 4}}, "text_sft": {}}
    )
    assert "50.00%" in table and "75.00%" in table and "text_sft exact" in table


MIXED_RESULTS = {
    "test": {
        "exact_match": 0.75,
        "num_examples": 8,
        **{"exact_match/task=sort": 1.0, "num_examples/task=sort": 4, "program_accuracy/task=sort": 1.0},
        **{
            "exact_match/task=arithmetic": 0.5,
            "num_examples/task=arithmetic": 4,
            "program_accuracy/task=arithmetic": 0.25,
        },
    },
    "heldout_phrasing": {"exact_match/task=sort": 0.5, "num_examples/task=sort": 2},
    "sort_ood_length_48": {"exact_match": 0.25, "num_examples": 4},
    "sort_ood_length_24": {"exact_match": 0.75, "num_examples": 4},
}


def test_per_task_results_of_the_mixture(tmp_path):
    """`all`: one row per task, held-out lengths shortest first, a task absent from a split marked unmeasured; the
    card gets per-task rows with each task's own example count; the bar chart is written."""
    per_task = task_results(MIXED_RESULTS)
    assert list(per_task) == ["arithmetic", "sort"]
    assert per_task["sort"]["ood"] == [("sort_ood_length_24", 0.75), ("sort_ood_length_48", 0.25)]
    assert per_task["arithmetic"]["heldout_phrasing"] is None and per_task["arithmetic"]["program"] == 0.25
    lines = task_table(MIXED_RESULTS).splitlines()
    assert lines[2].split()[:3] == ["arithmetic", "50.00%", "-"] and "75.00% (length_24)" in lines[3]
    report = {"task": "all", "results": MIXED_RESULTS, "command": "python train_sft.py --task all", "seed": 0}
    rows = measured_results(report | {"machine": "test"}, "generated")
    sort_test = {r["metric"]: r for r in rows if r["task"] == "sort" and r["split"] == "test"}
    assert sort_test["exact_match"]["value"] == 1.0 and sort_test["exact_match"]["num_examples"] == 4
    assert sort_test["program_accuracy"]["value"] == 1.0
    assert {(r["task"], r["split"]) for r in rows if r["metric"] == "exact_match"} >= {
        ("all", "test"),
        ("arithmetic", "test"),
        ("sort", "heldout_phrasing"),
        ("sort", "sort_ood_length_24"),
    }
    assert plot_task_results(per_task, tmp_path / "tasks.png").stat().st_size > 0


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """DDP on CPU (gloo) with the script unchanged: OMP_NUM_THREADS=1 torchrun --nproc_per_node 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "train_sft.py")]
    subprocess.run([*command, *tiny_args(tmp_path, "arithmetic", "--dataset_size", "200")], env=env, check=True)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "world size 2" in saved["machine"] and saved["command"].startswith("torchrun --nproc_per_node 2")
    assert saved["results"]["test"]["num_examples"] == saved["splits"]["test"]  # every example scored once


def test_numeral_token_values_from_the_llama3_tokenizer():
    from llama_delta.task_settings import numeral_token_values
    from llama_delta.tokenizer import load_llama3_tokenizer

    tokenizer = load_llama3_tokenizer()
    table = numeral_token_values(tokenizer, 128)
    assert len(table) == 128  # Llama 3 spells 0..999 as single tokens
    question = tokenizer("What is 17 times 5?", add_special_tokens=False)["input_ids"]
    assert sorted(table[str(token)] for token in question if str(token) in table) == [5, 17]


def test_spelled_token_values_from_the_llama3_tokenizer():
    from llama_delta.task_settings import spelled_token_values
    from llama_delta.tokenizer import load_llama3_tokenizer

    tokenizer = load_llama3_tokenizer()
    table = spelled_token_values(tokenizer, 128, most=4)
    question = tokenizer('Sort the string "qwhdbxza"', add_special_tokens=False)["input_ids"]
    spelled = ["".join(map(chr, table[str(t)])) if str(t) in table else None for t in question]
    # 'Sort', ' the', ' "', the string's pieces and the closing quote spell characters; ' string' has 7 (> most).
    assert spelled == ["Sort", " the", None, ' "', "q", "wh", "db", "x", "za", '"']
    assert all(1 <= len(values) <= 4 and all(0 < v < 128 for v in values) for values in table.values())
    spaced = spelled_token_values(tokenizer, 128, most=1, separators=" ")
    tokens = tokenizer(' "q w h"', add_special_tokens=False)["input_ids"]
    assert [spaced.get(str(t)) for t in tokens] == [[34], [113], [119], [104], [34]]  # ' "', 'q', ' w', ' h', '"'
