"""llama-delta tooling: building and training a Llama + Δ, evaluating and exporting it. Depends on
`modeling_llama_delta` and `data_builders`, never the reverse; `train_sft.py`, experiments and bench depend on it.

| module | what |
|---|---|
| `backbones`, `tokenizer`, `build` | Llama backbones (scratch, GGUF, folder), Llama 3 tokenizer, `build_delta_model` |
| `task_settings` | task -> Δ settings: library, machine size, parse mode, answer place and format, step bounds |
| `collator`, `callbacks`, `rom_check` | training pieces: the Δ collator, early stopping, the frozen-library check |
| `metrics`, `exact_match` | exact match and element accuracy with breakdowns (`exact_match`: an `evaluate` module) |
| `text_baseline` | the plain fine-tuning baseline: prompts, greedy answers parsed back, scored like Δ |
| `presets`, `report`, `sft` | YAML presets -> flags; the run report; the recipe `train_sft.py` runs |
| `export`, `plotting` | the Hub-ready export (card: `model_card.md`), trace plots |
"""
