"""Where the structured ALU's FFT ops pay: the Δ machine loop with them on and off, interleaved in one process.

    OMP_NUM_THREADS=1 python -m bench.bench_fourier                 # n = 128, 256 (about a minute)
    OMP_NUM_THREADS=1 python -m bench.bench_fourier --sizes 1024 --steps 10

The benchmark loop of `bench_machine.py` (add, mul, div, lt; B = 32, R = 8, M = 32, soft inputs) runs with
`FOURIER_MIN_N` at 2 (add/mul through the FFT at every n) and above n (the level-set pass), alternating the two
for `--repeats` rounds; the best time per step of each is printed. One thread by default: with two, this
2-core machine's timings come out in one of two modes per process (about 2x apart), which hides a 10% change.
`alu.FOURIER_MIN_N` is set from these numbers.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import modeling_llama_delta.alu as alu_module
from bench.bench_machine import PROGRAM, soft_inputs
from modeling_llama_delta.machine import DeltaMachine


def machine(n: int, fourier: bool) -> DeltaMachine:
    default = alu_module.FOURIER_MIN_N
    alu_module.FOURIER_MIN_N = 2 if fourier else n + 1  # read when the ALU is built
    try:
        delta = DeltaMachine(n, 8, 32, alu="structured", programs={"loop": PROGRAM})
    finally:
        alu_module.FOURIER_MIN_N = default
    delta.halt_tolerance = -1.0  # never stop early
    assert delta.alu.fourier_ops(delta.alu_ops(delta.rom)) == (("add", "mul") if fourier else ())
    return delta


def forward_backward(delta: DeltaMachine, inputs: tuple[torch.Tensor, torch.Tensor], steps: int) -> None:
    memory, registers = (t.clone().requires_grad_() for t in inputs)
    out = delta(delta.start_state(memory, registers), max_steps=steps)
    (out.state.memory.square().sum() + out.state.registers.square().sum()).backward()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="word sizes n (powers of two)")
    parser.add_argument("--steps", type=int, default=30, help="machine steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best round counts")
    args = parser.parse_args(argv)
    print(f"threads={torch.get_num_threads()} torch {torch.__version__}; fwd+bwd ms per step, best of {args.repeats}")
    for n in args.sizes:
        inputs = soft_inputs(32, n, 32)  # memory, registers
        machines = {"level sets": machine(n, False), "fft": machine(n, True)}
        best = dict.fromkeys(machines, float("inf"))
        for delta in machines.values():
            forward_backward(delta, inputs, 3)  # warm-up: index lists and workspaces
        for _ in range(args.repeats):
            for name, delta in machines.items():
                start = time.perf_counter()
                forward_backward(delta, inputs, args.steps)
                best[name] = min(best[name], (time.perf_counter() - start) / args.steps * 1e3)
        ratio = best["level sets"] / best["fft"]
        print(f"n={n:<5} level sets {best['level sets']:7.3f}  fft {best['fft']:7.3f}  level sets / fft {ratio:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
