"""AcceptancePredictor: a small head that predicts whether the target accepts a draft token.

One per drafter, saved beside the drafter's weights (``acceptance_predictor.safetensors``
+ ``acceptance_predictor.json``) with the fingerprint of the drafter it was trained for.
Input: `core.acceptance.acceptance_features` (top-1 probability, entropy, top-1/top-2
margin, depth, and the drafter's hidden state where it has one), standardised with the
training set's mean / std. Architecture: a 2-layer MLP (features -> 32, GELU -> 1) with a
sigmoid; output a = P(token accepted | the tokens before it in the draft were accepted).
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
FORMAT_VERSION = 1


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
    """features [..., F] -> P(accepted) [...]."""

    def __init__(self, num_features: int, hidden: int = 32) -> None:
        super().__init__()
        if num_features < 1 or hidden < 1:
            raise InputError(f"AcceptancePredictor needs num_features >= 1 and hidden >= 1, got {num_features}, {hidden}")
        self.num_features, self.hidden = int(num_features), int(hidden)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.fingerprint: dict = {}

    def set_normalisation(self, features: torch.Tensor) -> None:
        """features [N, F]: the training set's mean and std (std floor 1e-4)."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-4))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features.float() - self.mean) / self.std).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features))

    @torch.inference_mode()
    def predict(self, features: torch.Tensor) -> float:
        """One token's features [F] -> P(accepted) as a float (what the gate calls)."""
        return float(self(features.to(self.mean.device)))

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
            "architecture": "2-layer MLP (features -> hidden, GELU -> 1) + sigmoid on standardised features",
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
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"{meta_path} has format {meta.get('format_version')!r}; this vlmspec reads "
                                 f"{FORMAT_VERSION}.")
        predictor = cls(int(meta["num_features"]), int(meta.get("hidden", 32)))
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
