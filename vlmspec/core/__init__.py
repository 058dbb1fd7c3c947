"""The model-agnostic speculative core: sampling, verification, cache helpers, draft
length schedules, metrics and the loop. Imports nothing from drafters, training,
evaluation or the CLI."""
