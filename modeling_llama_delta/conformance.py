"""Conformance runner (docs/ISA.md "Conformance format"): the reference interpreter and Δ on the same cases.

    python -m modeling_llama_delta.conformance CASES.jsonl [--alu NAME]     (`-` reads stdin)

One JSON answer line per case, in order. An assembly error (naming the source line) or any other invalid case
(naming the field and its allowed kind or range: n in 2..4096, max_steps in 0..1,000,000) is reported in that
case's answer, with no results, and the run goes on. docs/ISA.md, "Conformance format", defines the cases.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterable, Iterator

import torch

from .alu import ALU_BACKENDS, DEFAULT_ALU
from .assembler import assemble, excerpt
from .machine import DeltaMachine
from .reference import run_reference

# Each case field: (required, kind, allowed range). Ranges follow LlamaDeltaConfig's; n is capped so that a case
# cannot ask for a machine that takes minutes to build (n = 2**20).
MAX_WORD_SIZE = 4096
MAX_STEPS = 1_000_000
CASE_FIELDS: dict[str, tuple[bool, str, tuple[int, int] | None]] = {
    "id": (False, "any", None),
    "source": (True, "str", None),
    "n": (True, "int", (2, MAX_WORD_SIZE)),
    "num_registers": (True, "int", (2, 256)),
    "memory_size": (True, "int", (1, MAX_WORD_SIZE)),
    "memory": (False, "list", None),
    "registers": (False, "list", None),
    "entry": (False, "str", None),
    "max_steps": (False, "int", (0, MAX_STEPS)),
}


def check_case(case) -> None:
    """ValueError naming the field for a case that is not an object of the fields above, of their kinds and ranges."""
    if not isinstance(case, dict):
        raise ValueError(f"a case must be a JSON object, got {type(case).__name__}")
    for name in case:
        if name not in CASE_FIELDS:
            close = difflib.get_close_matches(str(name), CASE_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown field {excerpt(name)}{hint}; the fields are: {', '.join(CASE_FIELDS)}")
    for name, (required, kind, allowed) in CASE_FIELDS.items():
        if name not in case:
            if required:
                raise ValueError(f"missing field {name!r}")
            continue
        value = case[name]
        if value is None and not required and name != "max_steps":  # null means "not given" (entry: none)
            continue
        if kind == "str" and not isinstance(value, str):
            raise ValueError(f"field {name!r} = {json.dumps(value)[:60]} must be a string")
        if kind == "list" and not isinstance(value, list):
            raise ValueError(f"field {name!r} = {json.dumps(value)[:60]} must be a list of integers")
        if kind == "int":
            low, high = allowed
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"field {name!r} = {json.dumps(value)[:60]} must be an integer in {low}..{high}")


def run_case(case: dict, alu: str = DEFAULT_ALU, machines: dict | None = None) -> dict:
    """The answer to one case: reference and soft results, or {"id", "error"} (the error names the field or line)."""
    answer: dict = {"id": case.get("id") if isinstance(case, dict) else None, "error": None}
    try:
        check_case(case)
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
    except (ValueError, MemoryError) as error:  # AssemblyError is a ValueError
        return {**answer, "error": str(error)}
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
        except (json.JSONDecodeError, RecursionError) as error:
            yield {"id": None, "error": f"input line {number}: not JSON: {excerpt(str(error))}"}
            continue
        if not isinstance(case, dict):
            yield {"id": None, "error": f"input line {number}: a case must be a JSON object, got {type(case).__name__}"}
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
