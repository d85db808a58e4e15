"""Δ benchmark: the dense-table ALU against the table-free backends, alone and inside the whole machine.

    OMP_NUM_THREADS=2 python -m bench.bench_machine            # full run (< ~10 min), writes bench/results_machine.json
    python -m bench.bench_machine --quick                      # smoke configuration, seconds

Measured side by side in one process: the ALU alone (forward, forward+backward; best of 5) and the
machine forward (no grad) and forward+backward for 100 and 300 steps (after a short warm-up and the
peak-memory run, the backends of each (n, steps) group are timed in turn, best of 2 rounds), B = 32,
R = 8, M = 32, a never-halting loop with soft (non-one-hot) inputs, so every step runs; `structured` also
with gradient checkpointing (blocks of 20 steps). n = 1024 (table-free backends only, checkpointed, 100
steps) and the table at n = 256 (100 steps only) are cut to fit the time budget; groups that would start
after 9 minutes are skipped and listed.

The structured ALU computes only the ops the frozen ROM can select (`DeltaMachine.alu_ops`): the loop
uses add/mul/div/lt (5 of its 9 ops are skipped). Extra `structured` rows (100 steps, plain autograd)
run the same loop with every one of the nine ALU ops in it (`program` "every_op"), and the library's
insertion `sort` (min and lt only: no n² work). Their ratios are against the table's loop rows (the
table's step costs the same for every program: it always computes all nine ops); `targets` use the
loop rows only.

Peak memory is the growth of the process's resident set during one run: glibc's free lists are
trimmed (malloc_trim), the kernel's high-water mark is reset (/proc/self/clear_refs), and the run's
peak is VmHWM - VmRSS before it. tracemalloc cannot see torch's allocations; this counts every byte
the run touched (activations, temporaries, allocator slack), not the ALU table built before it.

The floor of a step (B = 32, n = 128, forward+backward: ~15 MFLOP and ~6 MB of memory traffic,
scaled by n² and n for other sizes) is turned into seconds with the GEMM GFLOP/s and copy GB/s
measured in the same run; "x floor" = measured / max(FLOP time, traffic time).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

from modeling_llama_delta.alu import ALU_BACKENDS, TableALU, build_alu
from modeling_llama_delta.library import LIBRARY
from modeling_llama_delta.machine import DeltaMachine

# Every ALU op, a memory read and write, a conditional jump and a call; never halts.
PROGRAM = """
loop:
    add r2, r0, r1
    mul r3, r2, r0
    write r1, r3
    read r4, r1
    lt r5, r4, r3
    div r0, r3, r1
    inc r1, r1
    jnz r1, loop
    call loop
"""
# The same loop with the five ALU ops it lacks added: every binary op has nonzero probability.
EVERY_OP_PROGRAM = """
loop:
    add r2, r0, r1
    mul r3, r2, r0
    write r1, r3
    read r4, r1
    lt r5, r4, r3
    div r0, r3, r1
    inc r1, r1
    sub r2, r2, r1
    mod r3, r3, r1
    min r4, r4, r2
    max r5, r5, r3
    eq r2, r4, r5
    jnz r1, loop
    call loop
"""
FLOOR_FLOP_128, FLOOR_BYTES_128 = 15e6, 6e6  # one fwd+bwd step at B = 32, n = 128
# Machine sizes run by every backend; table-free sizes skip the table (it cannot be built there).
FULL = {
    "machine_sizes": [64, 128, 256],
    "table_free_sizes": [1024],
    "alu_sizes": [64, 128, 256, 1024],
    "steps": [100, 300],
    "batch": 32,
    "memory_size": 32,
    "extra_programs": ["every_op", "sort"],  # structured-only rows: the loop with all nine ops, the library's sort
}
QUICK = {
    "machine_sizes": [16, 32],
    "table_free_sizes": [64],
    "alu_sizes": [16, 32],
    "steps": [10],
    "batch": 4,
    "memory_size": 8,
    "extra_programs": ["every_op"],  # sort needs more than 16 ROM lines
}
TABLE_MAX_STEPS_AT_256 = 100  # the table machine at n >= 256 costs ~0.4 s per step: 300 steps would not fit
TIME_BUDGET_S = 540  # machine runs still waiting after this are skipped (and listed as skipped)


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def peak_growth(fn):
    """(fn(), peak resident-set growth in bytes during fn); None where /proc is not available."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return fn(), None
    result = fn()
    return result, _status("VmHWM") - base


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (builds tables and index lists)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def hardware(repeats: int) -> dict:
    """Achievable GEMM GFLOP/s (1024² matmul) and copy GB/s (64 MB into a preallocated buffer, read + write)."""
    a = torch.randn(1024, 1024)
    gemm = best_time(lambda: a @ a, repeats)
    x, y = torch.randn(16 * 1024 * 1024), torch.empty(16 * 1024 * 1024)
    copy = best_time(lambda: y.copy_(x), repeats)
    return {"gemm_gflops": 2 * 1024**3 / gemm / 1e9, "copy_gbps": 2 * x.numel() * 4 / copy / 1e9}


def soft_inputs(batch: int, n: int, memory_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.softmax(torch.randn(batch, memory_size, n, generator=g) * 3, -1)
    registers = torch.softmax(torch.randn(batch, 3, n, generator=g) * 3, -1)
    return memory, registers


def bench_alu(name: str, n: int, batch: int, repeats: int) -> dict:
    alu = build_alu(name, n)
    x, y = soft_inputs(batch, n, 2)[0].unbind(1)

    def forward():
        with torch.no_grad():
            alu(x, y)

    def forward_backward():
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        alu(xs, ys).sum().backward()

    return {"fwd_ms": best_time(forward, repeats) * 1e3, "fwdbwd_ms": best_time(forward_backward, repeats) * 1e3}


def prepare_machine(
    name: str, n: int, steps: int, batch: int, memory_size: int, checkpoint: int, program: str = "loop"
) -> tuple[dict, dict]:
    """A machine's forward (no grad) and forward+backward over `steps` steps, warmed up: ({"fwd": fn, "fwdbwd": fn},
    peak memory growth in MB of each, measured in its own untimed run).

    program: "loop" (PROGRAM), "every_op" (EVERY_OP_PROGRAM) or a library program's name."""
    machine = DeltaMachine(n, 8, memory_size, alu=name, checkpoint_steps=checkpoint)
    sources = {"loop": PROGRAM, "every_op": EVERY_OP_PROGRAM}
    machine.set_programs({program: sources.get(program) or LIBRARY[program]})
    machine.halt_tolerance = -1.0  # never stop early (h <= 1 < 2): a library program that halts still runs every step
    memory, registers = soft_inputs(batch, n, memory_size)

    def forward(count: int = steps):
        with torch.no_grad():
            out = machine(machine.start_state(memory, registers), max_steps=count)
        assert out.steps == count

    def forward_backward(count: int = steps):
        mem, regs = memory.clone().requires_grad_(), registers.clone().requires_grad_()
        out = machine(machine.start_state(mem, regs), max_steps=count)
        (out.state.memory.square().sum() + out.state.registers.square().sum()).backward()
        assert out.steps == count and mem.grad is not None

    runs, peaks = {"fwd": forward, "fwdbwd": forward_backward}, {}
    for key, fn in runs.items():
        fn(min(steps, 3))  # warm-up: builds the ALU's tables and index lists
        # Peak memory in its own, untimed run: it hands freed memory back to the OS first, and touching fresh
        # pages again slowed the structured machine's run.
        _, peak = peak_growth(fn)
        peaks[key] = None if peak is None else peak / 1e6
    return runs, peaks


def time_machines(prepared: list[tuple[dict, dict]], repeats: int) -> list[dict]:
    """Best time (ms) of each prepared machine's runs, the machines timed in turn `repeats` times, so that a slow
    spell of this shared machine hits every backend of the group alike rather than one."""
    best = [{key: float("inf") for key in runs} for runs, _ in prepared]
    for _ in range(repeats):
        for (runs, _), row in zip(prepared, best, strict=True):
            for key, fn in runs.items():
                start = time.perf_counter()
                fn()
                row[key] = min(row[key], (time.perf_counter() - start) * 1e3)
    return [
        {f"{key}_ms": row[key] for key in row} | {f"{key}_peak_mb": peaks[key] for key in peaks}
        for row, (_, peaks) in zip(best, prepared, strict=True)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke configuration: small n, few steps")
    parser.add_argument("--repeats", type=int, default=None, help="best of this many runs (default 5 ALU, 2 machine)")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results_machine.json; none: --quick)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    sizes, big, step_counts = config["machine_sizes"], config["table_free_sizes"], config["steps"]
    alu_sizes, batch, memory_size = config["alu_sizes"], config["batch"], config["memory_size"]
    alu_repeats = args.repeats or (2 if args.quick else 5)
    machine_repeats = args.repeats or (1 if args.quick else 2)
    backends = list(ALU_BACKENDS)  # table, structured, circuit
    started = time.perf_counter()
    results = {
        "config": {
            "batch": batch,
            "num_registers": 8,
            "memory_size": memory_size,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "quick": args.quick,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "hardware": hardware(alu_repeats),
        "alu": [],
        "machine": [],
        "skipped": [],
    }
    print(
        f"threads={torch.get_num_threads()}  GEMM {results['hardware']['gemm_gflops']:.0f} GFLOP/s  "
        f"copy {results['hardware']['copy_gbps']:.1f} GB/s"
    )

    for n in alu_sizes:
        for name in backends:
            if name == "table" and TableALU(n).table_bytes(torch.float32) > TableALU(n).max_bytes:
                results["skipped"].append(
                    f"table ALU n={n}: refused, needs {TableALU(n).table_bytes(torch.float32) / 1e9:.1f} GB"
                )
                continue
            try:
                row = {"alu": name, "n": n, **bench_alu(name, n, batch, alu_repeats)}
            except ValueError as error:  # circuit: n not a power of two
                results["skipped"].append(f"{name} ALU n={n}: {error}")
                continue
            results["alu"].append(row)
            print(
                f"ALU {name:>10} n={n:<5} fwd {row['fwd_ms']:9.3f} ms  fwd+bwd {row['fwdbwd_ms']:9.3f} ms", flush=True
            )

    plans = []  # (alu, n, steps, checkpoint, program)
    for n in sizes + big:
        for steps in step_counts:
            for name in backends:
                if name == "table" and (n in big or (n >= 256 and steps > TABLE_MAX_STEPS_AT_256)):
                    continue
                if n in big and steps > min(step_counts):
                    continue  # table-free sizes: the shortest run only (time budget)
                plans.append((name, n, steps, 0 if n not in big else 20, "loop"))
                if name == "structured" and n not in big:
                    plans.append((name, n, steps, 20, "loop"))  # gradient checkpointing, blocks of 20 steps
                if name == "structured" and n not in big and steps == min(step_counts):
                    plans += [(name, n, steps, 0, program) for program in config["extra_programs"]]
    groups: dict[tuple[int, int], list] = {}  # (n, steps) -> plans, timed together
    for plan in plans:
        groups.setdefault(plan[1:3], []).append(plan)
    for group in groups.values():
        if time.perf_counter() - started > TIME_BUDGET_S:
            results["skipped"] += [
                f"machine {name} n={n} steps={steps} ckpt={ckpt} {program}: over the time budget"
                for name, n, steps, ckpt, program in group
            ]
            continue
        prepared = [
            prepare_machine(name, n, steps, batch, memory_size, ckpt, program)
            for name, n, steps, ckpt, program in group
        ]
        for (name, n, steps, ckpt, program), timed in zip(group, time_machines(prepared, machine_repeats), strict=True):
            row = {"alu": name, "n": n, "steps": steps, "checkpoint_steps": ckpt, "program": program, **timed}
            row["fwd_ms_per_step"], row["fwdbwd_ms_per_step"] = row["fwd_ms"] / steps, row["fwdbwd_ms"] / steps
            results["machine"].append(row)
            print(
                f"machine {name:>10} {program:>8} n={n:<5} steps={steps:<4} ckpt={ckpt:<3} "
                f"fwd {row['fwd_ms_per_step']:8.3f} ms/step  fwd+bwd {row['fwdbwd_ms_per_step']:8.3f} ms/step  "
                f"peak fwd+bwd {row['fwdbwd_peak_mb'] or float('nan'):8.1f} MB",
                flush=True,
            )
    results["skipped"].append(
        f"table machine at n={big}: the table cannot be built (or is not run); at n >= 256 only "
        f"{TABLE_MAX_STEPS_AT_256} steps, and n={big} only {min(step_counts)} steps (time budget)"
    )

    results["ratios"] = ratios(results)
    results["floor"] = floor(results, batch)
    results["targets"] = targets(results)
    results["elapsed_s"] = time.perf_counter() - started
    print_summary(results)
    out = args.out or (None if args.quick else str(Path(__file__).with_name("results_machine.json")))
    if out:
        Path(out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def ratios(results: dict) -> list[dict]:
    """table time / backend time, for every measurement the table has (machine: plain autograd rows)."""
    rows = []
    table_alu = {row["n"]: row for row in results["alu"] if row["alu"] == "table"}
    for row in results["alu"]:
        base = table_alu.get(row["n"])
        if row["alu"] != "table" and base:
            rows.append(
                {
                    "what": "alu",
                    "alu": row["alu"],
                    "n": row["n"],
                    "fwd_x": base["fwd_ms"] / row["fwd_ms"],
                    "fwdbwd_x": base["fwdbwd_ms"] / row["fwdbwd_ms"],
                }
            )
    table_machine = {(r["n"], r["steps"]): r for r in results["machine"] if r["alu"] == "table"}  # the loop
    for row in results["machine"]:
        base = table_machine.get((row["n"], row["steps"]))
        if row["alu"] != "table" and base:
            rows.append(
                {
                    "what": "machine",
                    "alu": row["alu"],
                    "n": row["n"],
                    "steps": row["steps"],
                    "checkpoint_steps": row["checkpoint_steps"],
                    "program": row["program"],
                    "fwd_x": base["fwd_ms"] / row["fwd_ms"],
                    "fwdbwd_x": base["fwdbwd_ms"] / row["fwdbwd_ms"],
                }
            )
    return rows


def floor(results: dict, batch: int) -> list[dict]:
    """Measured structured fwd+bwd step time against the step's floor at the measured GFLOP/s and GB/s."""
    hw = results["hardware"]
    rows = []
    for row in results["machine"]:
        if row["alu"] != "structured":
            continue
        scale = batch / 32
        flop = FLOOR_FLOP_128 * scale * (row["n"] / 128) ** 2
        traffic = FLOOR_BYTES_128 * scale * row["n"] / 128
        floor_ms = max(flop / (hw["gemm_gflops"] * 1e9), traffic / (hw["copy_gbps"] * 1e9)) * 1e3
        rows.append(
            {
                "n": row["n"],
                "steps": row["steps"],
                "checkpoint_steps": row["checkpoint_steps"],
                "program": row["program"],
                "floor_ms_per_step": floor_ms,
                "x_floor": row["fwdbwd_ms_per_step"] / floor_ms,
            }
        )
    return rows


def targets(results: dict) -> dict:
    """The brief's targets. Speed-ups compare per-step times, the best row of each backend at that n (any step
    count; structured with or without checkpointing), which is robust to a contention burst in one row."""

    def best_step(alu, n):
        rows = [
            r["fwdbwd_ms_per_step"] for r in results["machine"] if (r["alu"], r["n"], r["program"]) == (alu, n, "loop")
        ]
        return min(rows) if rows else None

    def speedup(n):
        table, structured = best_step("table", n), best_step("structured", n)
        return table / structured if table and structured else None

    ckpt300 = [
        r
        for r in results["machine"]
        if (r["alu"], r["n"], r["steps"], r["checkpoint_steps"], r["program"]) == ("structured", 128, 300, 20, "loop")
    ]
    floor300 = [
        r
        for r in results["floor"]
        if (r["n"], r["steps"], r["checkpoint_steps"], r["program"]) == (128, 300, 20, "loop")
    ]
    big = [r for r in results["machine"] if r["alu"] != "table" and r["n"] >= 1024]
    return {
        "fwdbwd_vs_table_n128 (>= 20)": speedup(128),
        "fwdbwd_vs_table_n256 (>= 100)": speedup(256),
        "n1024_runs_without_table": bool(big),
        "peak_mb_300_steps_n128_checkpointed (< 100)": ckpt300[0]["fwdbwd_peak_mb"] if ckpt300 else None,
        "x_floor_300_steps_n128_checkpointed (<= 5)": floor300[0]["x_floor"] if floor300 else None,
    }


def print_summary(results: dict) -> None:
    print("\nratios (table time / backend time):")
    for row in results["ratios"]:
        where = (
            "ALU alone"
            if row["what"] == "alu"
            else f"machine {row['program']} {row['steps']} steps ckpt={row['checkpoint_steps']}"
        )
        print(
            f"  {row['alu']:>10} n={row['n']:<4} {where:<36} fwd {row['fwd_x']:7.1f}x  fwd+bwd {row['fwdbwd_x']:7.1f}x"
        )
    print("structured fwd+bwd step vs its floor:")
    for row in results["floor"]:
        print(
            f"  n={row['n']:<5} {row['program']:>8} steps={row['steps']:<4} ckpt={row['checkpoint_steps']:<3} "
            f"floor {row['floor_ms_per_step']:.3f} ms/step -> {row['x_floor']:.1f}x floor"
        )
    for line in results["skipped"]:
        print(f"skipped: {line}")
    for key, value in results["targets"].items():
        print(f"target {key}: {value if not isinstance(value, float) else round(value, 2)}")
    print(f"elapsed {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
