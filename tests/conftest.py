"""Shared test settings."""

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

# The flat remote-code files `save_pretrained` ships: the closure of the model's relative imports.
REMOTE_CODE_FILES = {
    "alu.py",
    "assembler.py",
    "circuits.py",
    "compiler.py",
    "configuration_llama_delta.py",
    "library.py",
    "machine.py",
    "modeling_llama_delta.py",
}
