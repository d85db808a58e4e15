"""The main job's wall time, before and after: `python train_sft.py --task sort` at a base commit and at this tree.

    python -m bench.bench_default_run --base d1d551f        # ~10 min on 2 cores; writes bench/results_default_run.json

The base commit is checked out into a temporary git worktree; each side runs the unchanged default command in a
fresh process with its own data cache and output folder (so neither reuses the other's data or checkpoints), one
after the other, on the same machine. Run it alone: a second busy process on a 2-core VM slows torch several-fold.
Reports each side's wall time, the training time the Trainer measured, and its test / held-out exact match.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_discrete import cpu_model

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["train_sft.py", "--task", "sort"]


def run_default(tree: Path, scratch: Path) -> dict:
    """The default main job in `tree`, its outputs and data cache under `scratch`."""
    out = scratch / "run"
    env = {**os.environ, "HF_DATASETS_CACHE": str(scratch / "hf_cache")}
    command = [sys.executable, *COMMAND, "--output_dir", str(out), "--data_cache_dir", str(scratch / "data")]
    start = time.perf_counter()
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "train_runtime_s": results["train_runtime_s"],
        "optimizer_steps": results["optimizer_steps"],
        "exact_match": {name: split.get("exact_match") for name, split in results["results"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. the last landed one)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_default_run.json"))
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
        try:
            before = run_default(base_tree, Path(scratch) / "before")
            print("base:", before, flush=True)
            after = run_default(ROOT, Path(scratch) / "after")
            print("this tree:", after, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=True)
    report = {
        "command": "python " + " ".join(COMMAND),
        "base": args.base,
        "head": head.strip() + (" (+ uncommitted changes)" if _dirty() else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}",
        "torch": torch.__version__,
        "before": before,
        "after": after,
        "wall_ratio_after_over_before": round(after["wall_s"] / before["wall_s"], 3),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _dirty() -> bool:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return bool(status.strip())


if __name__ == "__main__":
    main()
