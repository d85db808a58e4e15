"""Does `torch.compile` speed up Δ's step on CPU? Eager against compiled, interleaved in one process.

    OMP_NUM_THREADS=1 python -m bench.bench_compile              # n = 128, ~1 min (most of it compiling)
    OMP_NUM_THREADS=1 python -m bench.bench_compile --n 256

`_StepUpdate` (steps 3-6 of a step: the mix of every op's result, the writes, the counter) is the machine's
largest node without ALU work. Its forward and backward bodies are compiled as plain functions (inductor,
`fullgraph=True`; the custom autograd function itself does not compile on torch 2.13 CPU: inductor's
"vr must not be None") and timed alone on one step's tensors, then inside the whole machine (the benchmark
loop of `bench_machine.py`, B = 32, forward+backward), against the eager bodies. Best of `--repeats`.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.bench_machine import PROGRAM, soft_inputs
from modeling_llama_delta import machine as delta

# The node's bodies as plain functions (dynamo treats attribute access on an autograd.Function class specially).
_UPDATE_FORWARD, _UPDATE_BACKWARD = delta._StepUpdate.forward, delta._StepUpdate.backward


class _Context:
    """Stands in for autograd's ctx so that a node's forward/backward bodies run as plain functions."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def _constants(tensors: tuple, sizes: tuple[int, int]) -> delta._StepConstants:
    return delta._StepConstants(*sizes, *tensors)


def update_forward(state, halted, fields, operands, alu_results, tensors: tuple, sizes: tuple[int, int]):
    ctx = _Context()
    new_state, new_halted = _UPDATE_FORWARD(
        ctx, state, halted, fields, operands, alu_results, _constants(tensors, sizes)
    )
    return new_state, new_halted, ctx.saved_tensors


def update_backward(g_state, g_halted, saved: tuple, tensors: tuple, sizes: tuple[int, int]):
    ctx = _Context()
    ctx.saved_tensors, ctx.constants = saved, _constants(tensors, sizes)
    return _UPDATE_BACKWARD(ctx, g_state, g_halted)[:5]


def step_tensors(k: delta._StepConstants) -> tuple:
    return (k.mixing, k.mixing_bias, k.jump_shift, k.jump_sign, k.halt_onehot, k.blocks)


def compiled_update_node(forward, backward) -> type[torch.autograd.Function]:
    class CompiledUpdate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, state, halted, fields, operands, alu_results, k):
            sizes = (k.num_registers, k.memory_size)
            new_state, new_halted, saved = forward(state, halted, fields, operands, alu_results, step_tensors(k), sizes)
            ctx.save_for_backward(*saved)
            ctx.k = k
            return new_state, new_halted

        @staticmethod
        def backward(ctx, g_state, g_halted):
            sizes = (ctx.k.num_registers, ctx.k.memory_size)
            grads = backward(g_state.contiguous(), g_halted, ctx.saved_tensors, step_tensors(ctx.k), sizes)
            return (*grads, None)

    return CompiledUpdate


def timed_ms(fn, runs: int = 1) -> float:
    """Mean milliseconds of `runs` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="machine steps per timed run")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    n, batch = args.n, 32
    machine = delta.DeltaMachine(n, 8, 32, alu="structured")
    machine.set_programs({"loop": PROGRAM})
    machine.halt_tolerance = -1.0  # every step runs
    memory, registers = soft_inputs(batch, n, 32)
    compiled_forward = torch.compile(update_forward, dynamic=False, fullgraph=True)
    compiled_backward = torch.compile(update_backward, dynamic=False, fullgraph=True)

    # One step's inputs of `_StepUpdate`, as the machine builds them.
    start = machine.start_state(memory, registers)
    packed = torch.cat([start.registers, start.memory, start.counter[:, :, None]], dim=2)[:, 0].contiguous()
    k, rom = machine._constants(), machine.rom_distribution()
    with torch.no_grad():
        fields, operands, state = delta._StepRead.apply(packed, rom, k)
        alu_results = machine.alu(operands[:, 0], operands[:, 1])
        sizes = (k.num_registers, k.memory_size)
        inputs = (state, start.halted[:, 0], fields, operands, alu_results, step_tensors(k), sizes)
        saved = update_forward(*inputs)[2]
        g_state, g_halted = torch.rand_like(packed), torch.rand(batch)
        rows = {}
        for name, forward, backward in (
            ("eager", update_forward, update_backward),
            ("compiled", compiled_forward, compiled_backward),
        ):
            calls = {
                "node_fwd_us": lambda forward=forward: forward(*inputs),
                "node_bwd_us": lambda backward=backward: backward(g_state.clone(), g_halted, saved, *inputs[-2:]),
            }
            for call in calls.values():
                call()  # warm-up (and compilation)
            rows[name] = {
                key: 1e3 * min(timed_ms(call, 100) for _ in range(args.repeats)) for key, call in calls.items()
            }

    def forward_backward():
        mem, regs = memory.clone().requires_grad_(), registers.clone().requires_grad_()
        out = machine(machine.start_state(mem, regs), max_steps=args.steps)
        (out.state.memory.square().sum() + out.state.registers.square().sum()).backward()

    nodes = {"eager": delta._StepUpdate, "compiled": compiled_update_node(compiled_forward, compiled_backward)}
    for name in nodes:  # warm-up (and compilation) before the interleaved timing
        delta._StepUpdate = nodes[name]
        forward_backward()
        rows[name]["machine_fwdbwd_ms_per_step"] = float("inf")
    for _ in range(args.repeats):
        for name, node in nodes.items():
            delta._StepUpdate = node
            rows[name]["machine_fwdbwd_ms_per_step"] = min(
                rows[name]["machine_fwdbwd_ms_per_step"], timed_ms(forward_backward) / args.steps
            )
    delta._StepUpdate = nodes["eager"]
    print(f"n = {n}, B = {batch}, threads = {torch.get_num_threads()}, torch {torch.__version__}")
    for name, row in rows.items():
        print(
            f"{name:>9}: _StepUpdate forward {row['node_fwd_us']:7.1f} us  backward {row['node_bwd_us']:7.1f} us  "
            f"machine fwd+bwd {row['machine_fwdbwd_ms_per_step']:.3f} ms/step"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
