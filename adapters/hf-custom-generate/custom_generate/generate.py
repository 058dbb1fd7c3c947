"""vlmspec's speculative loop as a transformers ``custom_generate`` folder.

    model.generate(**inputs, max_new_tokens=64, custom_generate="adapters/hf-custom-generate",
                   trust_remote_code=True)

transformers runs this file (hence ``trust_remote_code=True``) and calls ``generate`` with
every argument ``model.generate`` received; it hands them back to ``model.generate`` with
``custom_generate=vlmspec.hf_generate``, so transformers prepares the generation config,
logits processors and stopping criteria exactly as for its own decoding. Greedy output is
token for token ``model.generate``'s; see ``vlmspec.hf`` for what is refused.
"""

from transformers import GenerationMixin

import vlmspec


def generate(model, **kwargs):
    kwargs.pop("custom_generate", None)
    kwargs.pop("trust_remote_code", None)
    return GenerationMixin.generate(model, **kwargs, custom_generate=vlmspec.hf_generate)
