"""llama-delta's model package: the differentiable computer Δ, its assembler, reference
interpreter, program library and (later) the Transformers model. Flat, so that its Hub copy is
self-contained; imports only torch, transformers and the standard library."""

from .assembler import OPCODES, AssemblyError, Instruction, Program, assemble
from .reference import ReferenceResult, run_reference

__all__ = ["OPCODES", "AssemblyError", "Instruction", "Program", "ReferenceResult", "assemble", "run_reference"]
