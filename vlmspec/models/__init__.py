"""Building and caching the default model."""

from .default import DEFAULT_MODEL, DefaultModelConfig, default_model_dir, load_default

__all__ = ["DEFAULT_MODEL", "DefaultModelConfig", "default_model_dir", "load_default"]
