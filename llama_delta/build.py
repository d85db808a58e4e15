"""Build a `LlamaDeltaForAlgorithmicQA` around a Llama backbone: a Hub id or `save_pretrained` folder, a GGUF file,
or the paper's minimal LLaMA from scratch.

    from llama_delta.build import build_delta_model
    model = build_delta_model("HuggingFaceTB/SmolLM2-135M", delta_word_size=128)  # any Llama checkpoint
    model = build_delta_model(smollm2_gguf_path())  # a GGUF file (dequantized)
    model = build_delta_model(None, backbone_kwargs={"vocab_size": 512}, delta_parse_mode="slots")  # scratch
    model, report = build_delta_model(folder, return_report=True)  # report.new: what was not in the backbone

The backbone's weights are copied exactly into `model.model`; only the Δ head (`delta_head.*`: the parser and
the library ROM, which `_init_weights` compiled from `delta_programs`) is new. The backbone loads through
`backbones.load_llama_backbone`, so GGUF dequantization and the architecture check are the same as everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers.utils import logging

from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA

from .backbones import load_llama_backbone, minimal_llama_config

logger = logging.get_logger(__name__)

SCRATCH = "scratch"
DELTA_FIELDS = tuple(name for name in LlamaDeltaConfig.__annotations__ if name.startswith("delta_"))
# Backbone config entries that describe the checkpoint rather than the architecture: the Δ config sets its own.
_NOT_INHERITED = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path", "dtype")


@dataclass
class BuildReport:
    """What `build_delta_model` did: `copied` tensors came from the backbone unchanged, `new` ones did not."""

    source: str
    copied: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


def delta_config_from(backbone_config: Mapping[str, Any], **delta_config: Any) -> LlamaDeltaConfig:
    """A `LlamaDeltaConfig` with the backbone's architecture and the given `delta_*` fields (validated)."""
    unknown = sorted(set(delta_config) - set(DELTA_FIELDS))
    if unknown:
        # LlamaDeltaConfig would keep a misspelt field as an inert attribute; refuse it here instead.
        raise ValueError(f"unknown Δ config fields {unknown}; allowed: {', '.join(DELTA_FIELDS)}")
    inherited = {key: value for key, value in backbone_config.items() if key not in _NOT_INHERITED}
    return LlamaDeltaConfig(**inherited, **delta_config)


def build_delta_model(
    backbone: str | os.PathLike | None = None,
    gguf_file: str | None = None,
    *,
    backbone_kwargs: Mapping[str, Any] | None = None,
    return_report: bool = False,
    **delta_config: Any,
) -> LlamaDeltaForAlgorithmicQA | tuple[LlamaDeltaForAlgorithmicQA, BuildReport]:
    """A Llama + Δ model whose backbone is `backbone`, with Δ configured by `delta_config` (`delta_*` fields).

    backbone: a Hub id, a `save_pretrained` folder, a `.gguf` file (or its folder with `gguf_file`), or `None` /
        `"scratch"` for a freshly initialised `minimal_llama_config()`.
    backbone_kwargs: for a checkpoint, `from_pretrained` arguments (`revision`, `token`, `dtype`, ...); from scratch,
        `minimal_llama_config` overrides (`vocab_size`, `hidden_size`, ...).
    return_report: also return a `BuildReport` (the copied and the new state-dict keys). Either way the new keys
        are logged at INFO level.

    The Δ head stays in float32 whatever the backbone's dtype.
    """
    backbone_kwargs = dict(backbone_kwargs or {})
    if backbone is None or str(backbone) == SCRATCH:
        config = delta_config_from(minimal_llama_config(**backbone_kwargs).to_dict(), **delta_config)
        model = LlamaDeltaForAlgorithmicQA(config)
        report = BuildReport(SCRATCH, new=sorted(model.state_dict()))
    else:
        base = load_llama_backbone(backbone, gguf_file, with_lm_head=False, **backbone_kwargs)
        model = LlamaDeltaForAlgorithmicQA(delta_config_from(base.config.to_dict(), **delta_config))
        model.model.to(base.dtype)  # copy in the backbone's own dtype, so the copy is exact
        backbone_state = base.state_dict()
        # strict: every backbone tensor lands in `model.model` with its shape, and nothing of the backbone is missing
        model.model.load_state_dict(backbone_state, strict=True)
        copied = {f"model.{key}" for key in backbone_state}
        report = BuildReport(
            str(backbone) if gguf_file is None else os.path.join(str(backbone), gguf_file),
            copied=sorted(copied),
            new=sorted(set(model.state_dict()) - copied),
        )
        del base, backbone_state
    logger.info(f"built LlamaDeltaForAlgorithmicQA from {report.source}: {len(report.new)} new tensors {report.new}")
    return (model, report) if return_report else model


__all__ = ["DELTA_FIELDS", "SCRATCH", "BuildReport", "build_delta_model", "delta_config_from"]
