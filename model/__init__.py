"""SIGMA Studio model package: the public API.

>>> from sigma_studio.model import load_pipeline
>>> pipe = load_pipeline("tiny")
>>> pipe("a cat <subject> <img1> on the moon", images=["cat.png"], steps=4, seed=7).image.save("out.png")
"""

from .arch_config import read_arch_config
from .config import ArchConfig, GenerationConfig, LLMConfig, LoaderConfig, ResizeSpec, VAEConfig, ViTConfig
from .errors import CheckpointError, InputError, MissingDependencyError, PromptError, SigmaError, UnsupportedModeError
from .loader import load_pipeline
from .pipeline import GenerationResult, SigmaPipeline
from .preflight import preflight_arch
from .record import GenerationRecord, read_record
from .request import GenerationRequest, build_request
from .structure import ControlSpec

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
