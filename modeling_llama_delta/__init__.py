"""llama-delta's model package: the differentiable computer Δ, its assembler, reference interpreter,
program library and the Transformers model. Flat, so that its Hub copy is self-contained; imports only
torch, transformers and the standard library.

Importing it registers `llama_delta` with the Auto classes in-process and for remote code (`auto_map`), and the
`algorithmic-qa` pipeline in-process (saved checkpoints declare it in `custom_pipelines` for remote code).
"""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .assembler import OPCODES, AssemblyError, Instruction, Program, assemble
from .configuration_llama_delta import LlamaDeltaConfig
from .library import LIBRARY, assemble_library
from .machine import DeltaMachine, DeltaState
from .modeling_llama_delta import AlgorithmicQAOutput, DeltaComputerHead, LlamaDeltaForAlgorithmicQA
from .pipeline_llama_delta import TASK as PIPELINE_TASK
from .pipeline_llama_delta import AlgorithmicQAPipeline
from .reference import ReferenceResult, run_reference

AutoConfig.register(LlamaDeltaConfig.model_type, LlamaDeltaConfig, exist_ok=True)
AutoModel.register(LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA, exist_ok=True)
LlamaDeltaConfig.register_for_auto_class()
LlamaDeltaForAlgorithmicQA.register_for_auto_class("AutoModel")
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=AlgorithmicQAPipeline, pt_model=AutoModel, type="text"
)

__all__ = [
    "LIBRARY",
    "OPCODES",
    "PIPELINE_TASK",
    "AlgorithmicQAOutput",
    "AlgorithmicQAPipeline",
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
