"""Δ demo: compile library programs, run them on the differentiable machine, check every result against
the exact reference interpreter, and draw the run of insertion sort.

Usage:
    python demo.py                                   # n=128, structured ALU, trace PNG in outputs/demo/
    python demo.py --alu circuit --output_dir outputs/demo_circuit
    python demo.py --alu table                       # the paper's dense lookup table (slower, 600 MB at n=256)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from llama_delta.plotting import plot_trace
from modeling_llama_delta import DeltaMachine, assemble_library, run_reference
from modeling_llama_delta.library import memory_needed, step_bound


def text(s: str) -> list[int]:
    return [ord(c) for c in s] + [0]


# (program, memory, registers, where the answer is, size for the step bound, what it computes)
CASES = [
    ("add", [], [100, 50], "r0", 0, "100 + 50 mod 128"),
    ("div", [], [100, 7], "r0", 0, "100 // 7"),
    ("fib", [], [1, 1, 10], "r0", 10, "x_11 of 1, 1, 2, 3, ..."),
    ("fib_recursive", [], [0, 1, 12], "r0", 12, "x_13 of 0, 1, 1, 2, ... by recursion"),
    ("sort", text("dlifdbabejld"), [], "string", 12, 'sorted("dlifdbabejld")'),
    ("reverse", text("differentiable"), [], "string", 14, 'reversed("differentiable")'),
    ("strlen", text("library"), [], "r0", 7, 'len("library")'),
    ("count", text("hello world"), [ord("l")], "r0", 11, '"hello world".count("l")'),
    ("sum", [5, 17, 42, 99, 0], [], "r0", 4, "sum mod 128"),
    ("parity", text("101101"), [], "r0", 6, 'parity of "101101"'),
    ("add_digits", text("599") + text("823"), [], "string", 3, "599 + 823 (numerals as characters)"),
]


@dataclass
class DemoArguments:
    alu: str = field(default="structured", metadata={"help": "ALU backend: table, structured or circuit"})
    n: int = field(default=128, metadata={"help": "word size (a power of two for the circuit ALU)"})
    output_dir: str = field(default="outputs/demo", metadata={"help": "where the trace PNG goes"})


def show(result_memory: list[int], registers: list[int], where: str) -> str:
    if where == "r0":
        return str(registers[0])
    return "".join(chr(c) for c in result_memory[: result_memory.index(0)])


def main(args: DemoArguments) -> None:
    library = assemble_library([case[0] for case in CASES], n=args.n)
    print(f"Δ with the {args.alu} ALU, n = {args.n}, 8 registers; every program compiled to one-hot ROM tensors.\n")
    print(f"{'program':<14} {'computes':<42} {'Δ':>16} {'reference':>16} {'steps':>5} {'min p':>8} {'time':>7}")
    all_exact = True
    for name, memory, registers, where, size, meaning in CASES:
        program = library[name]
        memory_size = max(len(memory), memory_needed(name, size), 2)
        machine = DeltaMachine(
            args.n, 8, memory_size, alu=args.alu, max_steps=step_bound(name, size), programs=[program]
        )
        state = machine.initial_state(memory=[memory], registers=[registers], entry=name)
        start = time.perf_counter()
        run = machine(state, return_trace=name == "sort")
        seconds = time.perf_counter() - start
        values = run.state.values()
        soft = show(values["memory"][0].tolist(), values["registers"][0].tolist(), where)
        reference = run_reference(program, memory_size, memory, registers, entry=name, max_steps=step_bound(name, size))
        exact = show(reference.memory, reference.registers, where)
        confidence = float(run.state.confidence()[0])
        all_exact &= soft == exact and reference.halted and bool(values["halted"][0])
        print(f"{name:<14} {meaning:<42} {soft:>16} {exact:>16} {run.steps:>5} {confidence:>8.6f} {seconds:>6.2f}s")
        if run.trace is not None:
            path = plot_trace(
                run.trace, f"{args.output_dir}/trace_sort.png", title=f"Δ running insertion sort ({args.alu} ALU)"
            )
    print(f"\nΔ equals the reference interpreter on every program: {all_exact}")
    print(f"trace of insertion sort: {path}")
    if not all_exact:
        raise SystemExit(1)


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    main(arguments)
