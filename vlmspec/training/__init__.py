"""Drafter training for vlmspec: online distillation from a frozen LLaVA-style target.

    from vlmspec.training import TrainConfig, Trainer
    config = TrainConfig.from_json("train/drafters/eagle.json", overrides=["max_steps=100"])
    result = Trainer(config).train()       # result.drafter_dir -> vlmspec.load(target, f"eagle:{dir}")

Command line: `python -m vlmspec.training --config CONFIG.json [--set key=value ...]`, under
`accelerate launch` for several GPUs / nodes (train/drafters/README.md).
Modules: config (TrainConfig), data (sources, self-distillation, curriculum, bad samples),
losses, adapters (per drafter kind), trainer (the accelerate loop), cli.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["DrafterTrainingAdapter", "EagleAdapter", "StepContext", "TeacherOutputs", "VisionDrafterAdapter", "build_adapter", "register_adapter"], ".adapters"),
    **dict.fromkeys(["CurriculumConfig", "DataConfig", "EvalConfig", "LossConfig", "OptimConfig", "SelfDistillConfig", "SourceConfig", "TrainConfig"], ".config"),
    **dict.fromkeys(["BadSampleError", "CurriculumSampler", "DataReport", "RawSample", "TokenizedSample", "TrainBatch"], ".data"),
    **dict.fromkeys(["TrainResult", "Trainer", "train"], ".trainer"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
