"""Diagnostic gradient for sorting: straight-through with Δ's control flow detached (data path only).

Δ runs on the arg-max (one-hot) parse without gradients, exactly as `delta_straight_through` does. The answer's
gradient then goes, not through Δ's Jacobian over hundreds of steps (which explodes: logged pre-clip norms reach
1e16), but through the data path alone: output element k is a copy of the input cells holding the same value, so
its soft distribution is the mean of those cells' soft parse. Forward: exactly Δ's one-hot answer. This is what
a "detach control, keep data" option inside Δ would give for any program that only moves values.

    OMP_NUM_THREADS=1 python -m experiments.run_sft --name sort-surrogate --permutation_surrogate -- \
        --task sort_spaced --lengths 8 --ood_lengths 10
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor


def install_permutation_surrogate(model) -> None:
    """Replace the Δ head's run (in place) for memory-answer tasks whose answer is a rearrangement of the input."""
    head = model.delta_head
    config = head.config
    if config.delta_answer_source != "memory":
        raise ValueError("the permutation surrogate reads answers from memory (string tasks such as sort)")

    def run(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None,
        return_trace: bool,
        grow_answer: bool = False,
    ):
        parsed = self.parser(hidden, attention_mask, input_ids)
        cells, registers, selection = parsed.cells, parsed.registers, parsed.selection  # (B, C, n), (B, Rin, n), (B, P)
        hard_cells = F.one_hot(cells.argmax(-1), cells.shape[-1]).to(cells)  # (B, C, n)
        hard_registers = F.one_hot(registers.argmax(-1), registers.shape[-1]).to(registers)
        with torch.no_grad():
            state = self.machine.start_state(memory=hard_cells, registers=hard_registers, batch_size=cells.shape[0])
            final = self.machine(state, selection=selection.detach(), return_trace=return_trace)
        hard = final.state.memory[:, : config.delta_answer_length]  # (B, K, n): one-hot, Δ's exact answer
        # Which input cells hold the value of answer element k: (B, K, n) x (B, C, n) -> (B, K, C), row-normalised.
        match = torch.einsum("bkn,bcn->bkc", hard, hard_cells)
        match = match / match.sum(-1, keepdim=True).clamp(min=1)
        soft = torch.einsum("bkc,bcn->bkn", match, cells)  # (B, K, n): the copied cells' soft parse
        answer = hard + (soft - soft.detach())  # forward: exactly `hard`
        # no sampled parses (log q), no run report (no sizing or refusals): the head's other two outputs are None
        return answer, selection, final.state.halted, cells, registers, final.trace, None, None

    head._run = types.MethodType(run, head)
