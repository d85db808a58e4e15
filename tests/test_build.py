"""`build_delta_model`: a Llama backbone's weights copied exactly under a new Δ head (folder, GGUF, scratch), and
`LlamaDeltaForAlgorithmicQA.from_pretrained` straight from a plain Llama folder."""

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaModel

from llama_delta.backbones import load_llama_backbone, minimal_llama_config, smollm2_gguf_path
from llama_delta.build import BuildReport, build_delta_model
from modeling_llama_delta import LlamaDeltaForAlgorithmicQA

TINY_LLAMA = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=64)
DELTA = dict(delta_word_size=16, delta_memory_size=8, delta_max_steps=8)
HEAD_KEYS = {
    "delta_head.machine.rom",
    "delta_head.parser.norm.weight",
    "delta_head.parser.select.bias",
    "delta_head.parser.select.weight",
    "delta_head.parser.values.bias",
    "delta_head.parser.values.weight",
}


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny `LlamaForCausalLM` (untied lm_head, so the checkpoint holds a tensor the Δ model must not take)."""
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(minimal_llama_config(**TINY_LLAMA, tie_word_embeddings=False)).save_pretrained(folder)
    return folder


def assert_same_backbone(model: LlamaDeltaForAlgorithmicQA, reference: LlamaModel, input_ids: torch.Tensor) -> None:
    """Identical weights and identical hidden states at every layer."""
    reference_state = reference.state_dict()
    assert model.model.state_dict().keys() == reference_state.keys()
    for key, value in model.model.state_dict().items():
        assert value.dtype == reference_state[key].dtype and torch.equal(value, reference_state[key]), key
    with torch.no_grad():
        got = model.model(input_ids, output_hidden_states=True).hidden_states
        expected = reference.eval()(input_ids, output_hidden_states=True).hidden_states
    assert len(got) == len(expected)
    for layer, (left, right) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(left, right, rtol=0, atol=0, msg=f"hidden state {layer}")


def test_folder_backbone_is_copied_and_only_the_head_is_new(llama_folder):
    model, report = build_delta_model(llama_folder, return_report=True, **DELTA)
    assert isinstance(report, BuildReport) and report.source == str(llama_folder)
    assert set(report.new) == HEAD_KEYS
    assert set(report.copied) == {f"model.{key}" for key in LlamaModel.from_pretrained(llama_folder).state_dict()}
    assert model.config.model_type == "llama_delta" and model.config.delta_word_size == 16
    assert model.config.hidden_size == 32 and not model.config.tie_word_embeddings
    assert_same_backbone(model.eval(), LlamaModel.from_pretrained(llama_folder), torch.randint(0, 100, (2, 9)))
    model(input_ids=torch.randint(0, 100, (2, 9)))  # the head runs on the copied backbone


def test_from_pretrained_plain_llama_folder(llama_folder):
    model = LlamaDeltaForAlgorithmicQA.from_pretrained(llama_folder, delta_word_size=16, delta_memory_size=8).eval()
    assert (model.config.delta_word_size, model.config.delta_memory_size) == (16, 8)
    assert_same_backbone(model, LlamaModel.from_pretrained(llama_folder), torch.randint(0, 100, (2, 9)))
    built = build_delta_model(llama_folder, delta_word_size=16, delta_memory_size=8)
    assert torch.equal(model.delta_head.machine.rom, built.delta_head.machine.rom)


def test_from_pretrained_plain_llama_folder_reports_only_the_head_missing(llama_folder):
    _, info = LlamaDeltaForAlgorithmicQA.from_pretrained(llama_folder, **DELTA, output_loading_info=True)
    assert set(info["missing_keys"]) == HEAD_KEYS
    assert set(info["unexpected_keys"]) == {"lm_head.weight"}


def test_scratch_backbone():
    model, report = build_delta_model(None, backbone_kwargs=TINY_LLAMA, return_report=True, delta_parse_mode="slots")
    assert report.source == "scratch" and report.copied == [] and set(report.new) == set(model.state_dict())
    reference = minimal_llama_config(**TINY_LLAMA)
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rope_parameters"):
        assert getattr(model.config, field) == getattr(reference, field), field
    assert model.config.delta_parse_mode == "slots"
    assert build_delta_model("scratch", backbone_kwargs=TINY_LLAMA).config.hidden_size == 32


def test_misspelt_delta_field_is_refused(llama_folder):
    with pytest.raises(ValueError, match=r"unknown Δ config fields \['delta_wordsize'\]; allowed: delta_word_size"):
        build_delta_model(llama_folder, delta_wordsize=16)
    with pytest.raises(ValueError, match="delta_memory_size = 99 is out of range"):
        build_delta_model(llama_folder, delta_word_size=16, delta_memory_size=99)


@pytest.mark.slow
def test_smollm2_gguf_backbone():
    """~30 s: the 98 MB GGUF is parsed and dequantized twice."""
    path = smollm2_gguf_path()
    model, report = build_delta_model(path, return_report=True, delta_word_size=128, delta_memory_size=16)
    assert set(report.new) == HEAD_KEYS
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    reference = load_llama_backbone(path, with_lm_head=False)
    assert_same_backbone(model.eval(), reference, torch.tensor([[504, 3575, 282, 4649, 314]]))
