"""Conformance runner (ISA.md "Conformance format"): the reference interpreter and Δ on the same cases.

    python -m modeling_llama_delta.conformance CASES.jsonl [--alu NAME]     (`-` reads stdin)

One JSON answer line per case, in order. An assembly error (or any other invalid case) is reported in
that case's answer, with no results, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator

import torch

from .alu import ALU_BACKENDS, DEFAULT_ALU
from .assembler import AssemblyError, assemble
from .machine import DeltaMachine
from .reference import run_reference


def run_case(case: dict, alu: str = DEFAULT_ALU, machines: dict | None = None) -> dict:
    """The answer to one case: reference and soft results, or {"id", "error"}."""
    answer: dict = {"id": case.get("id"), "error": None}
    try:
        n, registers_count, memory_size = case["n"], case["num_registers"], case["memory_size"]
        program = assemble(case["source"], n, registers_count)
        memory, registers = case.get("memory") or [], case.get("registers") or []
        entry, max_steps = case.get("entry"), case.get("max_steps", 1000)
        reference = run_reference(program, memory_size, memory, registers, entry=entry, max_steps=max_steps)
        key = (n, registers_count, memory_size, alu)
        machines = {} if machines is None else machines
        if key not in machines:
            machines[key] = DeltaMachine(n, registers_count, memory_size, alu=alu)
        machine = machines[key]
        machine.set_programs([program])
        with torch.no_grad():
            state = machine.initial_state([memory], [registers], entry=entry)
            final = machine(state, max_steps=max_steps).state
        values = final.values()
    except (AssemblyError, ValueError, KeyError, TypeError, MemoryError) as error:
        message = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        return {"id": case.get("id"), "error": message}
    answer["reference"] = {
        "memory": reference.memory,
        "registers": reference.registers,
        "halted": reference.halted,
        "steps": reference.steps,
    }
    answer["soft"] = {
        "memory": values["memory"][0].tolist(),
        "registers": values["registers"][0].tolist(),
        "halted": bool(values["halted"][0]),
        "halt_probability": float(final.halted[0]),
        "min_confidence": float(final.confidence()[0]),
    }
    return answer


def run_cases(lines: Iterable[str], alu: str = DEFAULT_ALU) -> Iterator[dict]:
    """Answers for JSON lines (blank lines skipped), in order."""
    machines: dict = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as error:
            yield {"id": None, "error": f"input line {number}: not JSON: {error}"}
            continue
        yield run_case(case, alu, machines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeling_llama_delta.conformance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cases", help="JSONL file of cases, or - for stdin")
    parser.add_argument(
        "--alu",
        default=DEFAULT_ALU,
        choices=sorted(ALU_BACKENDS),
        help=f"ALU backend of the soft run (default: {DEFAULT_ALU}, the fastest exact one)",
    )
    args = parser.parse_args(argv)
    stream = sys.stdin if args.cases == "-" else open(args.cases, encoding="utf-8")
    with stream:
        for answer in run_cases(stream, args.alu):
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
