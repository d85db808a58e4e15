"""One `train_sft.py` run (`llama_delta.sft`) with Δ options its CLI lacks, summarised as a small JSON record.

`--straight_through` sets `delta_straight_through` (Δ runs on the arg-max one-hot parse, gradients go to the soft
parse); every other flag goes to `llama_delta.sft.main` unchanged. The record (`<out>/<name>.json`) holds the validation
metrics per epoch, the training-loss trend, the gradient norms the Trainer logged (finite? largest?) and the test
results, so runs can be compared in one table (`experiments/summarize.py`). `--numeral_pointer` swaps in the
diagnostic arithmetic parse of `experiments/numeral_pointer.py`, `--permutation_surrogate` the diagnostic sort
gradient of `experiments/permutation_surrogate.py`, `--char_lexicon` the string parse of
`experiments/char_lexicon.py`.

    OMP_NUM_THREADS=1 python -m experiments.run_sft --name arith-slots-1e-2 -- \
        --task arithmetic --parse_mode slots --learning_rate 1e-2 --max_train_samples 4000 --num_train_epochs 4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from experiments.char_lexicon import install_char_lexicon
from experiments.numeral_pointer import install_numeral_pointer
from experiments.permutation_surrogate import install_permutation_surrogate
from llama_delta import sft
from llama_delta.tokenizer import load_llama3_tokenizer

DIAGNOSTICS = ("numeral_pointer", "permutation_surrogate", "char_lexicon")


def summarize_history(log_history: list[dict]) -> dict:
    """Per-epoch validation metrics, the training loss at the start and end, and the logged gradient norms."""
    evals = [
        {
            "epoch": round(entry["epoch"], 2),
            "exact_match": entry["eval_exact_match"],
            "element_accuracy": entry["eval_element_accuracy"],
            "loss": entry["eval_loss"],
        }
        for entry in log_history
        if "eval_exact_match" in entry
    ]
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    norms = [entry["grad_norm"] for entry in log_history if "grad_norm" in entry]
    finite = [norm for norm in norms if math.isfinite(norm)]
    quarter = max(len(losses) // 4, 1)
    return {
        "validation": evals,
        "train_loss_first_quarter": sum(losses[:quarter]) / quarter if losses else None,
        "train_loss_last_quarter": sum(losses[-quarter:]) / quarter if losses else None,
        "train_loss_logged": losses,
        "grad_norm_logged": len(norms),
        "grad_norm_all_finite": len(finite) == len(norms),
        "grad_norm_max": max(finite) if finite else None,
        "grad_norm_median": sorted(finite)[len(finite) // 2] if finite else None,
    }


def time_budget_callback(budget_s: float) -> type:
    """`StopAtExactMatch` that also stops (after one last validation) once training has run `budget_s` seconds,
    so that runs of different cost per step get the same wall-clock budget."""

    class StopAtExactMatchOrBudget(sft.StopAtExactMatch):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() - self.started > budget_s:
                control.should_training_stop = True
                control.should_evaluate = True

    return StopAtExactMatchOrBudget


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="run name: output folder and record file")
    parser.add_argument("--out", default="/tmp/exp", help="where the run folder and the JSON record go")
    parser.add_argument("--straight_through", action="store_true", help="delta_straight_through = True")
    parser.add_argument(
        "--numeral_pointer", action="store_true", help="diagnostic slots parse (experiments/numeral_pointer.py)"
    )
    parser.add_argument(
        "--permutation_surrogate",
        action="store_true",
        help="diagnostic sort gradient (experiments/permutation_surrogate.py)",
    )
    parser.add_argument(
        "--char_lexicon", action="store_true", help="diagnostic tokens parse (experiments/char_lexicon.py)"
    )
    parser.add_argument("--time_budget_s", type=float, default=None, help="stop training (and validate) after this")
    args, rest = parser.parse_known_args(argv)
    rest = [arg for arg in rest if arg != "--"]

    # train_sft's CLI has no straight-through flag: add it to the Δ settings the task derives.
    derive = sft.delta_settings

    def settings_with_options(*positional, **keywords):
        settings = derive(*positional, **keywords)
        settings.delta_config["delta_straight_through"] = args.straight_through
        return settings

    sft.delta_settings = settings_with_options
    # Keep the trainer's log history (per-epoch validation, losses, gradient norms) of the finished run.
    captured: dict = {}
    train = sft.train_delta

    def train_and_capture(*positional, **keywords):
        run = train(*positional, **keywords)
        captured["log_history"] = list(run.trainer.state.log_history)
        return run

    sft.train_delta = train_and_capture
    if args.numeral_pointer or args.permutation_surrogate or args.char_lexicon:
        build = sft.build_delta_model

        def build_with_diagnostics(*positional, **keywords):
            model = build(*positional, **keywords)
            if args.numeral_pointer:
                install_numeral_pointer(model, load_llama3_tokenizer())  # the scratch backbone's tokenizer
            if args.char_lexicon:
                install_char_lexicon(model, load_llama3_tokenizer())
            if args.permutation_surrogate:
                install_permutation_surrogate(model)
            return model

        sft.build_delta_model = build_with_diagnostics
    if args.time_budget_s is not None:
        sft.StopAtExactMatch = time_budget_callback(args.time_budget_s)

    started = time.time()
    out = Path(args.out)
    report = sft.main([*rest, "--output_dir", str(out / args.name)])
    record = {
        "name": args.name,
        "argv": rest,
        "straight_through": args.straight_through,
        "diagnostics": [flag for flag in DIAGNOSTICS if getattr(args, flag)],
        "splits": report["splits"],
        "optimizer_steps": report["optimizer_steps"],
        "seconds_per_step": report["seconds_per_step"],
        "delta_steps_in_training": report["delta_steps_in_training"],
        "wall_time_s": time.time() - started,
        "test": {
            name: {key: result[key] for key in ("exact_match", "element_accuracy", "num_examples")}
            for name, result in report["results"].items()
        },
        **summarize_history(captured.get("log_history", [])),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "train_loss_logged"}, indent=2))
    return record


if __name__ == "__main__":
    main()
