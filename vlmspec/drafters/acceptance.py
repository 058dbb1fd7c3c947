"""AcceptancePredictor: a small head that predicts whether the target accepts a draft token.

One per drafter, saved beside the drafter's weights (``acceptance_predictor.safetensors``
+ ``acceptance_predictor.json``) with the fingerprint of the drafter it was trained for.
Input: `core.acceptance.acceptance_features` (top-1 probability, entropy, top-1/top-2
margin, depth, and the drafter's hidden state where it has one), standardised with the
training set's mean / std. Architecture: a 2-layer MLP (features -> 32, GELU -> 1 or 2) with
sigmoids. Output 0: a = P(token accepted | the tokens before it in the draft were accepted).
Output 1 (predictors trained with ``outputs=2``): n = P(the *next* token is accepted | this
one and those before it were), read from this token's features -- what the learned stop rule
needs to decide whether the next drafter forward is worth paying for before paying it.
Used by ``draft_length="learned"`` (lossless) and ``verification="approximate"`` (SPRINTER, lossy).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DrafterMismatchError, InputError, ModelLoadError

WEIGHTS_FILE = "acceptance_predictor.safetensors"
META_FILE = "acceptance_predictor.json"
FORMAT_VERSION = 2  # 2: `outputs` (1 or 2) in the card; version-1 files (one output) still load
READABLE_VERSIONS = (1, 2)


def drafter_fingerprint(drafter) -> dict:
    """Kind, feature size and a SHA-256 of the drafter's weights (names, shapes, dtypes, bytes):
    the same on every machine for the same weights."""
    module = drafter if isinstance(drafter, nn.Module) else getattr(drafter, "model", None)
    digest = hashlib.sha256()
    if isinstance(module, nn.Module):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"kind": type(drafter).__name__, "features": drafter.acceptance_features_size,
            "weights_sha256_16": digest.hexdigest()[:16]}


class AcceptancePredictor(nn.Module):
    """features [..., F] -> P(accepted) [...] (and, with outputs=2, P(next accepted) via `next_logits`)."""

    def __init__(self, num_features: int, hidden: int = 32, outputs: int = 1) -> None:
        super().__init__()
        if num_features < 1 or hidden < 1 or outputs not in (1, 2):
            raise InputError(f"AcceptancePredictor needs num_features >= 1, hidden >= 1 and outputs 1 or 2, got "
                             f"{num_features}, {hidden}, {outputs}")
        self.num_features, self.hidden, self.outputs = int(num_features), int(hidden), int(outputs)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, outputs))
        self.fingerprint: dict = {}

    def set_normalisation(self, features: torch.Tensor) -> None:
        """features [N, F]: the training set's mean and std (std floor 1e-4)."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-4))

    def all_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features [..., F] -> [..., outputs]: this token accepted, then (outputs=2) the next one."""
        return self.net((features.float() - self.mean) / self.std)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.all_logits(features)[..., 0]

    def next_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        return self.all_logits(features)[..., 1] if self.outputs == 2 else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features))

    @torch.inference_mode()
    def predict(self, features: torch.Tensor) -> "float | tuple[float, float]":
        """One token's features [F] -> what the gate reads: P(accepted) as a float, or with outputs=2
        the pair (P(accepted), P(next accepted | this one accepted))."""
        probs = torch.sigmoid(self.all_logits(features.to(self.mean.device))).tolist()  # [outputs]
        return probs[0] if self.outputs == 1 else (probs[0], probs[1])

    # ------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the weights and a JSON card beside them, each atomically."""
        from safetensors.torch import save

        from ..atomic import atomic_write_bytes, atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors), mode=0o644)
        atomic_write_json(directory / META_FILE, {
            "format_version": FORMAT_VERSION, "num_features": self.num_features, "hidden": self.hidden,
            "outputs": self.outputs,
            "architecture": f"2-layer MLP (features -> hidden, GELU -> {self.outputs}) + sigmoid on standardised "
                            "features" + ("; output 1 = P(next token accepted)" if self.outputs == 2 else ""),
            "drafter_fingerprint": self.fingerprint, **(extra or {})}, mode=0o644, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, drafter=None) -> "AcceptancePredictor":
        """Load from `directory`; with `drafter`, check it was trained for that drafter."""
        from ..weights import read_safetensors

        directory = Path(directory)
        meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise ModelLoadError(
                f"No acceptance predictor in {directory} (needs {META_FILE} and {WEIGHTS_FILE}). Train one with "
                "`vlmspec train --config train/acceptance/default.json --set drafter=SPEC --set output_dir=DIR` and pass predictor=DIR.")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise ModelLoadError(f"{meta_path} is not valid JSON ({exc}); train the predictor again.") from None
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise ModelLoadError(f"{meta_path} has format {meta.get('format_version')!r}; this vlmspec reads "
                                 f"{' and '.join(map(str, READABLE_VERSIONS))}.")
        predictor = cls(int(meta["num_features"]), int(meta.get("hidden", 32)), int(meta.get("outputs", 1)))
        tensors = read_safetensors(weights_path)
        try:
            predictor.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ModelLoadError(f"{weights_path} does not match its card {meta_path}: {exc}") from None
        predictor.fingerprint = meta.get("drafter_fingerprint") or {}
        predictor.eval()
        if drafter is not None:
            predictor.check_drafter(drafter)
        return predictor

    def check_drafter(self, drafter) -> None:
        actual = drafter_fingerprint(drafter)
        differing = [f"{k}: predictor {self.fingerprint.get(k)!r} vs drafter {v!r}"
                     for k, v in actual.items() if self.fingerprint.get(k) != v]
        if differing:
            raise DrafterMismatchError(
                f"This acceptance predictor was trained for another drafter ({'; '.join(differing)}). Train one "
                "for this drafter: `vlmspec train --config train/acceptance/default.json --set drafter=SPEC`.")
