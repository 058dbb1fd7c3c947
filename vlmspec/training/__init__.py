"""Drafter training for vlmspec: online distillation from a frozen LLaVA-style target.

    from vlmspec.training import TrainConfig, Trainer
    config = TrainConfig.from_json("train/drafters/eagle.json", overrides=["max_steps=100"])
    result = Trainer(config).train()       # result.drafter_dir -> vlmspec.load(target, f"eagle:{dir}")

Command line: `python -m vlmspec.training --config CONFIG.json [--set key=value ...]`, under
`accelerate launch` for several GPUs / nodes (train/drafters/README.md).
Modules: config (TrainConfig), data (sources, self-distillation, curriculum, bad samples),
losses, adapters (per drafter kind), trainer (the accelerate loop), cli.
"""

from .adapters import (
    DrafterTrainingAdapter,
    EagleAdapter,
    StepContext,
    TeacherOutputs,
    VisionDrafterAdapter,
    build_adapter,
    register_adapter,
)
from .config import (
    CurriculumConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    OptimConfig,
    SelfDistillConfig,
    SourceConfig,
    TrainConfig,
)
from .data import BadSampleError, CurriculumSampler, DataReport, RawSample, TokenizedSample, TrainBatch
from .trainer import Trainer, TrainResult, train

__all__ = [
    "BadSampleError", "CurriculumConfig", "CurriculumSampler", "DataConfig", "DataReport", "DrafterTrainingAdapter",
    "EagleAdapter", "EvalConfig", "LossConfig", "OptimConfig", "RawSample", "SelfDistillConfig", "SourceConfig",
    "StepContext", "TeacherOutputs", "TokenizedSample", "TrainBatch", "TrainConfig", "TrainResult", "Trainer",
    "VisionDrafterAdapter", "build_adapter", "register_adapter", "train",
]
