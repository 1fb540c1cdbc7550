"""Errors the toolkit raises on purpose.

Every user-facing failure is a :class:`SigmaError` whose message names the bad value, what is allowed and
how to fix it. Entry points (CLI, web UI) catch ``SigmaError`` once and render it; anything else is a bug.
"""

from __future__ import annotations


class SigmaError(Exception):
    """Base class of every error the toolkit raises for bad input, config or environment.

    All of them are things the user fixes (the input, the files, an install, network access), so the CLI exits
    with 2 for every one of them; an unexpected exception (a bug) exits with 1.
    """

    exit_code: int = 2


class InputError(SigmaError, ValueError):
    """The user's prompt, images or settings are invalid."""


class PromptError(InputError):
    """The interleaved prompt cannot be parsed or does not match the given images."""


class CheckpointError(SigmaError):
    """A checkpoint directory is missing files, or its weights do not match the architecture."""


class UnsupportedModeError(SigmaError):
    """A loading mode or precision is not available on this machine."""


class MissingDependencyError(SigmaError):
    """An optional dependency is needed for the requested feature."""

    def __init__(self, package: str, extra: str | None, feature: str):
        fix = f"pip install 'sigma-studio[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the '{package}' package: {fix}")
        self.package = package
        self.extra = extra
