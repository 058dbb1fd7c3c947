"""One exception family for vlmspec. Every message names the problem and the fix."""


class VlmspecError(Exception):
    """Base class of every error vlmspec raises on purpose."""


class InputError(VlmspecError, ValueError):
    """A user-supplied argument (image, prompt, option) is unusable."""


class ImageError(InputError):
    """The image is missing, corrupt or has no pixels."""


class PromptError(InputError):
    """The prompt is empty or does not fit the model's context."""


class ContextLengthError(PromptError):
    """The prompt plus max_new_tokens does not fit the model's context."""


class ModelLoadError(VlmspecError):
    """A target, drafter or default model could not be loaded or built."""


class DrafterMismatchError(VlmspecError):
    """A drafter does not belong to this target (tokenizer or fingerprint differs)."""


class NumericalError(VlmspecError, FloatingPointError):
    """A model produced NaN or infinite logits."""


class UnsupportedError(VlmspecError):
    """The model or setting cannot run this mode exactly (e.g. a tree mask under flash attention)."""


class VlmspecWarning(UserWarning):
    """Base class of vlmspec's warnings (the CLI prints them as one 'warning:' line)."""


class OneTimeSetupWarning(VlmspecWarning):
    """One-time work on this machine (measuring verify costs): slow once, cached for later runs."""


class DraftDepthWarning(VlmspecWarning):
    """The drafter's own depth limit caps what the draft schedule asked for."""
