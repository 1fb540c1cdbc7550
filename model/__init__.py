"""SIGMA Studio model package: the public API.

>>> from sigma_studio.model import load_pipeline
>>> pipe = load_pipeline("tiny")
>>> pipe("a cat <subject> <img1> on the moon", images=["cat.png"], steps=4, seed=7).image.save("out.png")
"""

from .config import ArchConfig, GenerationConfig, LLMConfig, LoaderConfig, ResizeSpec, VAEConfig, ViTConfig
from .errors import CheckpointError, InputError, MissingDependencyError, PromptError, SigmaError, UnsupportedModeError
from .request.build import GenerationRequest, build_request
from .request.record import GenerationRecord, read_record
from .request.structure import ControlSpec
from .run.pipeline import GenerationResult, SigmaPipeline
from .weights.arch_config import read_arch_config
from .weights.loader import load_pipeline
from .weights.preflight import preflight_arch

__all__ = [
    "ArchConfig",
    "CheckpointError",
    "ControlSpec",
    "GenerationConfig",
    "GenerationRecord",
    "GenerationRequest",
    "GenerationResult",
    "InputError",
    "LLMConfig",
    "LoaderConfig",
    "MissingDependencyError",
    "PromptError",
    "ResizeSpec",
    "SigmaError",
    "SigmaPipeline",
    "UnsupportedModeError",
    "VAEConfig",
    "build_request",
    "read_record",
    "ViTConfig",
    "load_pipeline",
    "preflight_arch",
    "read_arch_config",
]
