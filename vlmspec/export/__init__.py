"""Export a trained vlmspec drafter for a serving engine: `vlmspec export --format eagle --engine vllm|sglang`.

`export_drafter(drafter_dir, out_dir, format=..., engine=..., target=...)` writes the checkpoint
layout vLLM or SGLang loads as an EAGLE draft model, where that layout computes exactly what the
vlmspec drafter computes, and raises `UnsupportedExport` (naming why and what is supported) where
it does not. The mapping and what is refused: `engines.py`; reading a drafter folder: `source.py`;
the command line: `cli.py`. Importing this package loads no torch (the CLI parser needs the names).
"""

from ..lazy import lazy_exports

FORMATS = ("eagle", "eagle3")
ENGINES = ("vllm", "sglang")
DTYPE_NAMES = ("bfloat16", "float16", "float32")

_EXPORTS = {
    **dict.fromkeys(["UnsupportedExport", "check_exportable", "eagle_config", "eagle_tensors", "export_drafter"],
                    ".engines"),
    **dict.fromkeys(["SavedDrafter", "read_drafter", "target_text_config"], ".source"),
}
__all__ = sorted(["DTYPE_NAMES", "ENGINES", "FORMATS", *_EXPORTS])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
