"""Δ's soft run: does every distribution a step writes stay on the simplex? (issue 13, part 1)

    OMP_NUM_THREADS=1 python -m bench.mass_drift --baseline d1d551f     # writes bench/results_mass_drift.json
    OMP_NUM_THREADS=1 python -m bench.mass_drift --alus structured --eps 1e-9 --timing_rounds 0 \
        --out bench/results_mass_drift_eps1e-9.json
    OMP_NUM_THREADS=1 python -m bench.mass_drift --baseline d1d551f --no_drift --out bench/results_mass_step_time.json

Inputs one-hot × (1 - ε) + ε × a random distribution (n = 32, R = 8, M = 32, ε = 1e-5, 4 examples, seed 0) for
library programs; after 10, 20, 40, 80, 160, 300 and 1000 steps the worst |mass - 1| of the registers, the memory
cells and the counter, the range of the halting probability, and after 1000 steps the share of examples whose
arg-max state is the one-hot (ε = 0) run's, for every ALU backend in float32 and float64; then the gradient of
the final state's top log-probabilities through 300 float32 steps (finite or not, its largest entry).
`--baseline REV` also measures the code of commit REV (its `modeling_llama_delta/`, loaded as a second package)
in the same process, and times the soft step of both (B = 32, n = 128, the bench_machine loop, structured ALU,
forward and forward + backward, best of 7 rounds of 100 steps, the versions in turn); `--no_drift` times only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.bench_machine import PROGRAM as TIMING_LOOP  # the benchmark's loop: every ALU op, never halts
from modeling_llama_delta.library import LIBRARY

ROOT = Path(__file__).resolve().parents[1]

N, REGISTERS, MEMORY = 32, 8, 32
CHECKPOINTS = (10, 20, 40, 80, 160, 300, 1000)
GRADIENT_STEPS = 300
# (registers, memory) one-hot values per program; every run below is longer than 80 steps before it halts.
INPUTS = {
    "fib_recursive": ([0, 1, 8], []),  # depth 8: 86 steps
    "fib": ([1, 1, 20], []),  # depth 20: 63 steps
    "sort": ([], [9, 3, 7, 1, 8, 2, 6, 5]),  # length 8, 0-terminated
    "reverse": ([], [4, 9, 2, 7, 1, 3, 8, 5]),
}


def load_package(name: str, revision: str | None):
    """The current `modeling_llama_delta.machine`, or the one at git `revision` as package `name`."""
    if revision is None:
        return importlib.import_module("modeling_llama_delta.machine")
    folder = Path(tempfile.mkdtemp()) / name
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "modeling_llama_delta"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "--strip-components=1", "-C", str(folder)], input=archive, check=True)
    # the old package under its own name, imported from its folder (its relative imports resolve inside it)
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.machine")


def soft(values: list[int], rows: int, eps: float, dtype, batch: int, seed: int) -> torch.Tensor:
    """(B, rows, n) one-hot × (1 - ε) + ε/n; example b > 0 shifts the values by b (different inputs)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batch):
        row = [(v + b) % N if v else 0 for v in values] + [0] * (rows - len(values))
        noise = torch.rand(rows, N, generator=g, dtype=torch.float64)
        onehot = F.one_hot(torch.tensor(row), N).double()
        mixed = onehot * (1 - eps) + eps * noise / noise.sum(-1, keepdim=True)  # on the simplex, ε spread at random
        out.append(mixed)
    return torch.stack(out).to(dtype)


def machine_for(module, program: str, alu: str, dtype):
    return module.DeltaMachine(N, REGISTERS, MEMORY, alu=alu, programs={program: LIBRARY[program]}).to(dtype)


def start(module, machine, program: str, eps: float, dtype, batch: int = 4, seed: int = 0, logits=None):
    registers, memory = INPUTS[program]
    regs = soft(registers, len(registers), eps, dtype, batch, seed) if registers else None
    mem = soft(memory, len(memory) + 1, eps, dtype, batch, seed + 1) if memory else None
    if logits is not None:  # the input (registers, else memory) as a softmax of trainable logits
        regs, mem = (logits.softmax(-1), mem) if registers else (regs, logits.softmax(-1))
    return machine.start_state(memory=mem, registers=regs)


def mass_errors(state) -> dict:
    def worst(t: torch.Tensor) -> float:
        error = (t.double().sum(-1) - 1).abs().max()
        return float(error) if torch.isfinite(error) else math.inf

    halted = state.halted.double()
    return {
        "registers": worst(state.registers),
        "memory": worst(state.memory),
        "counter": worst(state.counter),
        "halted_min": float(halted.min()),
        "halted_max": float(halted.max()),
        "finite": bool(all(torch.isfinite(t).all() for t in (state.registers, state.memory, state.counter))),
    }


def drift(module, program: str, alu: str, dtype, eps: float) -> list[dict]:
    """Mass errors at the checkpoints, and whether the arg-max state agrees with the one-hot (ε = 0) run's."""
    machine = machine_for(module, program, alu, dtype)
    with torch.no_grad():
        exact = machine(start(module, machine, program, 0.0, dtype), max_steps=CHECKPOINTS[-1]).program_states.values()
        state = start(module, machine, program, eps, dtype)
        rows, done = [], 0
        for point in CHECKPOINTS:
            out = machine(state, max_steps=point - done)
            state, done = out.program_states, point
            rows.append({"steps": point, **mass_errors(state)})
    values = state.values()
    agrees = (values["memory"] == exact["memory"]).all(-1) & (values["registers"] == exact["registers"]).all(-1)
    rows[-1]["agrees_with_one_hot_run"] = float(agrees.double().mean())  # fraction of examples, after 1000 steps
    return rows


def gradient(module, program: str, alu: str, eps: float) -> dict:
    """Largest |d sum(log final registers' top value) / d logits| through GRADIENT_STEPS float32 steps."""
    machine = machine_for(module, program, alu, torch.float32)
    registers, memory = INPUTS[program]
    values, rows = (registers, len(registers)) if registers else (memory, len(memory) + 1)
    logits = soft(values, rows, eps, torch.float32, 4, 2).log().requires_grad_()
    state = start(module, machine, program, eps, torch.float32, logits=logits)
    out = machine(state, max_steps=GRADIENT_STEPS)
    final = out.program_states
    loss = final.registers.clamp_min(1e-30).log().amax(-1).sum() + final.memory.clamp_min(1e-30).log().amax(-1).sum()
    loss.backward()
    grad = logits.grad
    return {
        "steps": out.steps,
        "finite": bool(torch.isfinite(grad).all()),
        "max_abs": float(grad.abs().max()) if torch.isfinite(grad).all() else math.inf,
    }


def step_time(module, backward: bool, n: int = 128, batch: int = 32, steps: int = 100) -> float:
    """Seconds per soft step, forward (no grad) or forward + backward, the bench_machine loop (structured ALU,
    soft inputs, float32)."""
    machine = module.DeltaMachine(n, REGISTERS, MEMORY, alu="structured", programs={"loop": TIMING_LOOP})
    g = torch.Generator().manual_seed(0)
    memory = torch.softmax(torch.randn(batch, MEMORY, n, generator=g) * 3, -1).requires_grad_()
    registers = torch.softmax(torch.randn(batch, 6, n, generator=g) * 3, -1).requires_grad_()

    def run():
        with torch.set_grad_enabled(backward):
            out = machine(machine.start_state(memory, registers), max_steps=steps)
        if backward:
            (out.state.registers.square().sum() + out.state.memory.square().sum()).backward()

    run()
    start_time = time.perf_counter()
    run()
    return (time.perf_counter() - start_time) / steps


def measure(module, alus, dtypes, programs, eps) -> dict:
    results = {"drift": {}, "gradient": {}}
    for program in programs:
        for alu in alus:
            for dtype in dtypes:
                key = f"{program}/{alu}/{str(dtype).removeprefix('torch.')}"
                results["drift"][key] = drift(module, program, alu, dtype, eps)
                last = results["drift"][key][-1]
                print(
                    f"{key:36s} 1000 steps: registers {last['registers']:.2e} memory {last['memory']:.2e} "
                    f"counter {last['counter']:.2e} h [{last['halted_min']:.4f}, {last['halted_max']:.4f}] "
                    f"agrees with the one-hot run {last['agrees_with_one_hot_run']:.2f}",
                    flush=True,
                )
            results["gradient"][f"{program}/{alu}"] = gradient(module, program, alu, eps)
            print(
                f"{program}/{alu} gradient through {GRADIENT_STEPS} float32 steps: "
                f"{results['gradient'][f'{program}/{alu}']}",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision whose machine is measured beside the current one")
    parser.add_argument("--alus", nargs="+", default=["table", "structured", "circuit"])
    parser.add_argument("--programs", nargs="+", default=list(INPUTS))
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--timing_rounds", type=int, default=7)
    parser.add_argument("--no_drift", action="store_true", help="time the step only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_mass_drift.json"))
    args = parser.parse_args()
    versions = {"current": load_package("modeling_llama_delta", None)}
    if args.baseline:
        versions = {"baseline": load_package("modeling_llama_delta_baseline", args.baseline), **versions}
    dtypes = [torch.float32, torch.float64]
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "baseline": args.baseline,
        "n": N,
        "registers": REGISTERS,
        "memory_size": MEMORY,
        "eps": args.eps,
    }
    for name, module in versions.items():
        if not args.no_drift:
            print(f"== {name}", flush=True)
            report[name] = measure(module, args.alus, dtypes, args.programs, args.eps)
    if args.timing_rounds:
        times = {(name, mode): [] for name in versions for mode in ("forward", "forward+backward")}
        for _ in range(args.timing_rounds):  # the versions in turn, so a slow spell of the machine hits both
            for name, mode in times:
                times[name, mode].append(step_time(versions[name], backward=mode != "forward"))
        report["step_ms"] = {f"{name} {mode}": 1e3 * min(t) for (name, mode), t in times.items()}
        report["step_ms_median"] = {f"{name} {mode}": 1e3 * statistics.median(t) for (name, mode), t in times.items()}
        print(
            "soft step ms, B = 32, n = 128, structured, best / median of rounds:",
            report["step_ms"],
            report["step_ms_median"],
            flush=True,
        )
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
