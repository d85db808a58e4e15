"""llama-delta's model package: the differentiable computer Δ, its assembler, reference interpreter,
program library and the Transformers model. Flat, so that its Hub copy is self-contained; imports only
torch, transformers and the standard library.

Importing it registers `llama_delta` with the Auto classes in-process and for remote code (`auto_map`).
"""

from transformers import AutoConfig, AutoModel

from .assembler import OPCODES, AssemblyError, Instruction, Program, assemble
from .configuration_llama_delta import LlamaDeltaConfig
from .library import LIBRARY, assemble_library
from .machine import DeltaMachine, DeltaState
from .modeling_llama_delta import AlgorithmicQAOutput, DeltaComputerHead, LlamaDeltaForAlgorithmicQA
from .reference import ReferenceResult, run_reference

AutoConfig.register(LlamaDeltaConfig.model_type, LlamaDeltaConfig, exist_ok=True)
AutoModel.register(LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA, exist_ok=True)
LlamaDeltaConfig.register_for_auto_class()
LlamaDeltaForAlgorithmicQA.register_for_auto_class("AutoModel")

__all__ = [
    "LIBRARY",
    "OPCODES",
    "AlgorithmicQAOutput",
    "AssemblyError",
    "DeltaComputerHead",
    "DeltaMachine",
    "DeltaState",
    "Instruction",
    "LlamaDeltaConfig",
    "LlamaDeltaForAlgorithmicQA",
    "Program",
    "ReferenceResult",
    "assemble",
    "assemble_library",
    "run_reference",
]
