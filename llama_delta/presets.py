"""Presets (configuration/<preset>.yaml): YAML defaults turned into command-line flags that the user's flags
override, and the flags the environment implies (no GPU: float32, no pinned memory; torchrun on CPU: gloo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from transformers.utils import logging

logger = logging.get_logger(__name__)


def preset_path(preset: str, presets_dir: Path) -> Path:
    """configuration/<preset>.yaml, or `preset` itself when it is a YAML path."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else presets_dir / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets_dir.glob("*.yaml"))
        raise SystemExit(f"unknown preset {preset!r}: no {path}; presets: {', '.join(known)} (or a .yaml path)")
    return path


def to_argv(settings: dict) -> list[str]:
    """YAML settings -> command-line flags (lists as several values, dicts as JSON, None left out)."""
    argv = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def defaults_argv(preset: str, task: str, method: str, presets_dir: Path) -> list[str]:
    """Flags the preset and the environment imply, to be placed before the user's (argparse: the last one wins).

    A preset holds Trainer and script settings; its `tasks:` section adds per-task budgets. `bf16` is dropped
    without a GPU; under torchrun without a GPU, DDP runs on the CPU with gloo.
    """
    settings = yaml.safe_load(preset_path(preset, presets_dir).read_text()) or {}
    per_task = settings.pop("tasks", {}) or {}
    settings.update(per_task.get(task, {}) or {})
    if not torch.cuda.is_available() and settings.pop("bf16", None):
        logger.warning(f"preset {preset!r} asks for bf16; there is no GPU, so training runs in float32")
    settings.setdefault("output_dir", f"runs/{Path(preset).stem}-{task}-{method}")
    if not torch.cuda.is_available():
        settings.setdefault("dataloader_pin_memory", False)  # nothing to pin for
        if "WORLD_SIZE" in os.environ:
            settings.update(use_cpu=True, ddp_backend="gloo")
    return to_argv(settings)


def resume_argument(value: str | None) -> str | bool | None:
    """`--resume_from_checkpoint last` (or true) resumes from the newest checkpoint in the output folder."""
    return True if value in ("last", "true", "True") else value
