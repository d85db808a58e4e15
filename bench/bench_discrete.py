"""Δ's discrete path (`modeling_llama_delta/discrete.py`) against the soft machine, side by side in one process.

    OMP_NUM_THREADS=2 python -m bench.bench_discrete            # writes bench/results_discrete.json (13 min*)
    OMP_NUM_THREADS=1 python -m bench.bench_discrete --out bench/results_discrete_1thread.json
    python -m bench.bench_discrete --quick                      # smoke configuration, no JSON

Rows (issue 13, part 3):
- `train_step`: a training step (forward, backward, the Trainer's optimizer: `Trainer.get_optimizer_cls_and_kwargs`)
  of the default `python train_sft.py --task sort` run: its tiny preset model (minimal Llama from scratch, `tokens`
  parse of spelled tokens), its data (lengths 8/10/12), 32 questions x 8 sampled parses (B·S = 256), Δ's step limit
  of the training splits. Two copies of the model, one per path (`DeltaComputerHead.discrete_runs` False: today's
  soft machine; True: the discrete machine), step on the same batches with the same random draws, in turn; their
  losses must be equal (the two paths are the same computation). `delta_*`: the seconds of the step spent in Δ's
  run (the soft machine's forward, or the discrete path).
- `solve`: questions per second of `model.solve` on the held-out length 16 (200 questions, Δ's step limit of that
  split), after `--train_steps` discrete training steps so that the parse is a real one; the two paths' answers
  must be equal, and their exact match is recorded.
- `library_mixture`: the discrete machine alone, B = 256, n = 128: every example running its own program drawn from
  the whole library, against every example running `sort`, per example-step (a fixed number of steps, no early
  exit); and the soft machine for the same pair (B = 32): it runs every program on every example.
Times are medians over rounds, each round timing the paths in turn (the VM's speed drifts between spells).
(*) on the 2-core VM shared with three other jobs; most of it is the soft path's rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer

from llama_delta import sft
from llama_delta.build import build_delta_model
from llama_delta.collator import DeltaCollator
from llama_delta.task_settings import delta_settings
from modeling_llama_delta.discrete import DiscreteMachine
from modeling_llama_delta.library import assemble_library
from modeling_llama_delta.machine import DeltaMachine

FULL = dict(rounds=5, train_steps=150, solve_rounds=2, mixture_steps=200, soft_mixture_steps=20)
QUICK = dict(rounds=1, train_steps=2, solve_rounds=1, mixture_steps=10, soft_mixture_steps=2)


def default_sort_run(quick: bool):
    """The default sort run's tokenizer, data, model and Δ settings, built as train_sft.py builds them."""
    extra = ["--dataset_size", "40", "--ood_size", "40"] if quick else []
    args, model_args, training_args = sft.parse_args(["--task", "sort", *extra])
    tokenizer = sft.load_tokenizer(args, model_args)
    data = sft.load_data(args, training_args.seed)
    settings = delta_settings(args.task, data, tokenizer, alu=args.delta_alu, parse_samples=args.parse_samples)
    torch.manual_seed(training_args.seed)
    model = build_delta_model(None, **settings.delta_config)
    return args, training_args, tokenizer, data, settings, model


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return names[0] if names else platform.processor()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def train_step(model, optimizer, batch, seed: int) -> float:
    torch.manual_seed(seed)  # the same parse and program draws for both paths
    optimizer.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def time_delta_runs(model, spent: list[float]) -> None:
    """Add the seconds of every Δ run of `model` (soft machine or discrete path) to `spent[0]`."""
    head = model.delta_head

    def timing(fn):
        def run(*args, **kwargs):
            seconds, result = timed(lambda: fn(*args, **kwargs))
            spent[0] += seconds
            return result

        return run

    head.machine.forward = timing(head.machine.forward)
    head._run_discrete = timing(head._run_discrete)


def bench_train_step(model, training_args, data, collator, rounds: int) -> tuple[dict, object]:
    models = {"soft": model, "discrete": copy.deepcopy(model)}
    models["soft"].delta_head.discrete_runs = False
    delta_seconds = {name: [0.0] for name in models}
    for name, m in models.items():
        time_delta_runs(m, delta_seconds[name])
    optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(
        training_args
    )  # the Trainer's (fused AdamW)
    optimizers = {name: optimizer_class(m.parameters(), **optimizer_kwargs) for name, m in models.items()}
    rows = list(range(len(data["train"])))
    rng = random.Random(0)
    times = {name: [] for name in models}
    delta_times = {name: [] for name in models}
    losses = {name: [] for name in models}
    for round_ in range(rounds + 1):  # round 0 warms up
        batch = collator([data["train"][i] for i in rng.sample(rows, training_args.per_device_train_batch_size)])
        for name in ("soft", "discrete") if round_ % 2 else ("discrete", "soft"):
            models[name].train()
            delta_seconds[name][0] = 0.0
            seconds, loss = timed(lambda m=models[name], o=optimizers[name], b=batch, r=round_: train_step(m, o, b, r))
            if round_:
                times[name].append(seconds)
                delta_times[name].append(delta_seconds[name][0])
                losses[name].append(loss)
    if losses["soft"] != losses["discrete"]:
        raise AssertionError(f"the two paths' losses differ: {losses}")
    soft, discrete = statistics.median(times["soft"]), statistics.median(times["discrete"])
    row = {
        "questions": training_args.per_device_train_batch_size,
        "samples": models["soft"].config.delta_parse_samples,
        "delta_max_steps": models["soft"].delta_head.machine.max_steps,
        "soft_s": soft,
        "discrete_s": discrete,
        "speedup": soft / discrete,
        "delta_soft_s": statistics.median(delta_times["soft"]),
        "delta_discrete_s": statistics.median(delta_times["discrete"]),
        "delta_speedup": statistics.median(delta_times["soft"]) / statistics.median(delta_times["discrete"]),
        "soft_all_s": times["soft"],
        "discrete_all_s": times["discrete"],
        "losses_equal": True,
    }
    return row, (models["discrete"], optimizers["discrete"], rng, rows)


def bench_solve(model, tokenizer, split, max_steps: int, batch_size: int, rounds: int) -> dict:
    questions, expected = list(split["question"]), list(split["answer"])
    model.resize_delta(max_steps=max_steps)
    head = model.delta_head
    # Both paths at the config's sizes (the soft machine cannot resize): the same computation, timed side by side;
    # refused questions are answered None on both.
    sizes_per_question, model.config.delta_size_per_question = model.config.delta_size_per_question, False
    times = {"soft": [], "discrete": []}
    answers = {}
    for round_ in range(rounds):
        for name in ("soft", "discrete") if round_ % 2 == 0 else ("discrete", "soft"):
            head.discrete_runs = name == "discrete"
            seconds, answers[name] = timed(
                lambda: model.solve(questions, tokenizer, batch_size=batch_size, refuse=False)
            )
            times[name].append(seconds)
    head.discrete_runs, model.config.delta_size_per_question = True, sizes_per_question
    if answers["soft"] != answers["discrete"]:
        raise AssertionError("solve's answers differ between the soft and the discrete path")
    soft, discrete = statistics.median(times["soft"]), statistics.median(times["discrete"])
    return {
        "questions": len(questions),
        "delta_max_steps": max_steps,
        "batch_size": batch_size,
        "soft_questions_per_s": len(questions) / soft,
        "discrete_questions_per_s": len(questions) / discrete,
        "speedup": soft / discrete,
        "answers_equal": True,
        "exact_match": sum(a == e for a, e in zip(answers["soft"], expected, strict=True)) / len(questions),
    }


def library_inputs(batch: int, n: int, memory_size: int, generator: torch.Generator):
    """Zero-terminated strings of random lengths in memory, small values in r0, r1."""
    memory = torch.randint(1, n, (batch, memory_size), generator=generator)
    lengths = torch.randint(4, memory_size, (batch, 1), generator=generator)
    memory[torch.arange(memory_size) >= lengths] = 0
    registers = torch.randint(0, 8, (batch, 2), generator=generator)
    return memory, registers


def bench_library_mixture(steps: int, soft_steps: int, rounds: int) -> dict:
    n, r, m, batch = 128, 8, 32, 256
    library = assemble_library(n=n, num_registers=r)
    names = list(library)
    discrete = DiscreteMachine(list(library.values()), m)
    generator = torch.Generator().manual_seed(0)
    memory, registers = library_inputs(batch, n, m, generator)
    programs = {
        "mixture": torch.randint(0, len(names), (batch,), generator=generator),
        "sort": torch.full((batch,), names.index("sort")),
    }

    def run_discrete(program):  # a fixed step count: the cost per example-step, whatever halts when
        return discrete.run(discrete.start_state(program, memory, registers), max_steps=steps, early_exit=False)

    soft_machines = {
        "mixture": DeltaMachine(n, r, m, programs=list(library.values())),
        "sort": DeltaMachine(n, r, m, programs=[library["sort"]]),
    }
    soft_batch = 32
    one_hot = torch.nn.functional.one_hot

    def run_soft(machine):
        start = machine.start_state(one_hot(memory[:soft_batch], n).float(), one_hot(registers[:soft_batch], n).float())
        machine.halt_tolerance = -1.0  # never "all halted": every step runs
        with torch.no_grad():
            return machine(start, max_steps=soft_steps)

    times = {f"{path}_{kind}": [] for path in ("discrete", "soft") for kind in programs}
    for round_ in range(rounds + 1):
        for kind in programs:
            seconds, _ = timed(lambda kind=kind: run_discrete(programs[kind]))
            if round_:
                times[f"discrete_{kind}"].append(seconds / (batch * steps))
            seconds, _ = timed(lambda kind=kind: run_soft(soft_machines[kind]))
            if round_:
                times[f"soft_{kind}"].append(seconds / (soft_batch * soft_steps))
    per_example_step_us = {key: statistics.median(value) * 1e6 for key, value in times.items()}
    return {
        "programs": names,
        "n": n,
        "num_registers": r,
        "memory_size": m,
        "discrete_batch": batch,
        "discrete_steps": steps,
        "soft_batch": soft_batch,
        "soft_steps": soft_steps,
        "per_example_step_us": per_example_step_us,
        "discrete_mixture_over_one": per_example_step_us["discrete_mixture"] / per_example_step_us["discrete_sort"],
        "soft_mixture_over_one": per_example_step_us["soft_mixture"] / per_example_step_us["soft_sort"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke configuration: tiny data, one round")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results_discrete.json; none: --quick)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    script_args, training_args, tokenizer, data, settings, model = default_sort_run(args.quick)
    collator = DeltaCollator(tokenizer, settings.delta_config["delta_answer_length"])
    model.resize_delta(max_steps=max(settings.max_steps[name] for name in sft.IN_DISTRIBUTION if name in data))
    results = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python -m bench.bench_discrete "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {
            "threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "seed": training_args.seed,
            "quick": args.quick,
            **config,
        },
    }
    results["train_step"], (trained, optimizer, rng, rows) = bench_train_step(
        model, training_args, data, collator, config["rounds"]
    )
    print(json.dumps(results["train_step"]), flush=True)
    trained.train()
    for step in range(config["train_steps"]):  # the discrete path trains the parse that `solve` then runs
        batch = collator([data["train"][i] for i in rng.sample(rows, training_args.per_device_train_batch_size)])
        train_step(trained, optimizer, batch, seed=10_000 + step)
    trained.eval()
    ood = next(name for name in data if name.startswith("ood_length"))
    results["solve"] = bench_solve(
        trained,
        tokenizer,
        data[ood],
        settings.max_steps[ood],
        training_args.per_device_eval_batch_size,
        config["solve_rounds"],
    )
    results["solve"] |= {"split": ood, "after_train_steps": config["train_steps"]}
    print(json.dumps(results["solve"]), flush=True)
    results["library_mixture"] = bench_library_mixture(
        config["mixture_steps"], config["soft_mixture_steps"], config["rounds"]
    )
    print(json.dumps(results["library_mixture"]), flush=True)
    results["seconds"] = time.perf_counter() - started
    out = args.out or (None if args.quick else str(Path(__file__).with_name("results_discrete.json")))
    if out:
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
