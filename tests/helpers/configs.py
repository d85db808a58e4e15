"""Shared test settings: a tiny Llama, a copying `slots` parse, and the files the remote code ships."""

# A Llama small enough for CPU tests in milliseconds; Δ settings are added per test.
TINY_LLAMA = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
# `slots` parsing that copies numerals: tokens 10..25 spell 0..15 (n = 16).
COPYING_SLOTS = dict(
    delta_word_size=16,
    delta_memory_size=8,
    delta_parse_mode="slots",
    delta_token_values={str(token): token - 10 for token in range(10, 26)},
)

# The flat remote-code files `save_pretrained` ships: the closure of the model's relative imports.
REMOTE_CODE_FILES = {
    "alu.py",
    "assembler.py",
    "circuits.py",
    "compiler.py",
    "configuration_llama_delta.py",
    "discrete.py",
    "library.py",
    "machine.py",
    "modeling_llama_delta.py",
    "parsing.py",
    "pipeline_llama_delta.py",
}
