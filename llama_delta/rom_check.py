"""Every Δ in a model: the check that the library stayed frozen through fine-tuning (ROM snapshots compared after
training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from modeling_llama_delta.machine import DeltaMachine


def delta_machines(model: torch.nn.Module) -> list[DeltaMachine]:
    """Every Δ in `model` (a PEFT wrapper holds the original and the trained copy of the head)."""
    return [module for module in model.modules() if isinstance(module, DeltaMachine)]


def library_snapshot(model: torch.nn.Module) -> list[Tensor]:
    """Copies of every Δ's library ROM, to check after training that the library was not changed."""
    return [machine.rom_distribution().detach().clone() for machine in delta_machines(model)]


def assert_library_unchanged(model: torch.nn.Module, snapshot: Sequence[Tensor]) -> None:
    """Fail if any Δ's ROM differs from `snapshot` (the library must stay frozen through fine-tuning)."""
    roms = library_snapshot(model)
    if len(roms) != len(snapshot):
        raise AssertionError(f"the model holds {len(roms)} Δ machines, the snapshot {len(snapshot)}")
    for index, (before, after) in enumerate(zip(snapshot, roms, strict=True)):
        if not torch.equal(before, after.to(before.device)):
            changed = (before != after.to(before.device)).any(-1).nonzero().tolist()
            raise AssertionError(f"library ROM of Δ #{index} changed during training at (program, line) {changed[:10]}")
