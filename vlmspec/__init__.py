"""vlmspec: lossless speculative decoding for LLaVA-style vision-language models.

    import vlmspec
    result = vlmspec.generate("photo.png", "Describe the image in detail.")
    print(result.text, result.metrics.tau)

Names are imported on first use (vlmspec/lazy.py), so `import vlmspec` and the command
line's --help do not load torch.
"""

import sys
import types

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(["BatchStream", "Pipeline", "Result", "TextStream", "generate", "load"], ".api"),
    **dict.fromkeys(["Draft", "DraftContext", "Drafter", "StepFeedback"], ".core.drafter"),
    "Metrics": ".core.metrics",
    "hf_generate": ".hf",
    "SamplingParams": ".core.sampling",
    "ScheduleConfig": ".core.schedule",
    **dict.fromkeys(["ModelDrafter", "NoDrafter", "PromptLookupDrafter", "build_drafter", "register_drafter"],
                    ".drafters"),
    **dict.fromkeys(["ContextLengthError", "DraftDepthWarning", "OneTimeSetupWarning", "DrafterMismatchError", "ImageError", "InputError", "ModelLoadError",
                     "NumericalError", "PromptError", "UnsupportedError", "VlmspecError", "VlmspecWarning"],
                    ".errors"),
    **dict.fromkeys(["Target", "TargetConfig"], ".target"),
}
__all__ = sorted([*_EXPORTS, "verdict"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(types.ModuleType):
    """`vlmspec.verdict` is the function, although a subpackage has the same name."""

    @property
    def verdict(self):
        from .verdict.runner import verdict

        return verdict

    @verdict.setter
    def verdict(self, subpackage) -> None:
        pass  # importing vlmspec.verdict records the subpackage here; it stays in sys.modules


sys.modules[__name__].__class__ = _Package
