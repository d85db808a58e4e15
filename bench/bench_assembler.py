r"""Assembler cost on hostile text: many labels on one line, a 1 MB bad line, a 5,000-digit number.

    OMP_NUM_THREADS=1 python -m bench.bench_assembler                     # writes bench/results_assembler.json
    git show d1d551f:modeling_llama_delta/assembler.py > /tmp/assembler_v1.py   # the v1 assembler, for comparison
    OMP_NUM_THREADS=1 python -m bench.bench_assembler --assembler_file /tmp/assembler_v1.py --labels 16000 32000 64000 \
        --repeats 1 --out bench/results_assembler_v1.json

The label timings double with the count when label handling is linear (ratio ~2 per doubling); the v1 assembler's
re-slicing of the rest of the line made them quadruple. Best of `--repeats` runs (the VM is shared).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch


def load_assembler(path: str | None):
    if path is None:
        from modeling_llama_delta import assembler

        return assembler
    spec = importlib.util.spec_from_file_location("assembler_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def outcome(assembler, source: str) -> str:
    """What assembling `source` gave: "ok", or the error's type and the length of its message."""
    try:
        assembler.assemble(source, 128, 8)
    except Exception as error:  # noqa: BLE001 - the benchmark records whatever the assembler raised
        return f"{type(error).__name__} ({len(str(error))} characters)"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assembler_file", help="time this assembler.py instead of the package's")
    parser.add_argument("--labels", type=int, nargs="+", default=[16_000, 32_000, 64_000, 128_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_assembler.json")), help="- for stdout")
    args = parser.parse_args()
    assembler = load_assembler(args.assembler_file)

    label_seconds = {}
    for count in args.labels:
        source = "".join(f"l{i}:" for i in range(count)) + " halt"
        label_seconds[count] = best_time(lambda source=source: assembler.assemble(source, 128, 8), args.repeats)
    counts = sorted(label_seconds)
    ratios = {f"{b}/{a}": label_seconds[b] / label_seconds[a] for a, b in zip(counts, counts[1:], strict=False)}
    hostile = {"1 MB bad line": "x" * 1_000_000, "5,000-digit number": "const r0, " + "9" * 5000}
    results = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "assembler": args.assembler_file or "modeling_llama_delta/assembler.py",
        "labels_on_one_line_seconds": {str(count): round(label_seconds[count], 4) for count in counts},
        "doubling_ratios": {key: round(value, 2) for key, value in ratios.items()},
        "hostile_inputs": {
            name: {
                "seconds": round(best_time(lambda s=source: outcome(assembler, s), args.repeats), 4),
                "outcome": outcome(assembler, source),
            }
            for name, source in hostile.items()
        },
    }
    text = json.dumps(results, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
