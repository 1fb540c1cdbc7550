"""Where weights come from: preset names, Hugging Face repositories, local directories.

``sigma`` (the default) combines the SIGMA post-trained weights with BAGEL's configs, tokenizer and autoencoder,
and downloads only those files from the backbone repository (not its 29 GB of weights that SIGMA replaces).
``bagel`` is the plain BAGEL-7B-MoT release. Any other ``owner/name`` is a repository in the released layout, or
a weights-only repository (then combined with BAGEL's configs like ``sigma``).

Downloads go through ``huggingface_hub`` (progress bars, resume of partial files, ``HF_HOME`` / ``cache_dir``,
``HF_TOKEN``). Offline (``HF_HUB_OFFLINE=1`` or no network) a source that is not cached raises
:class:`WeightsUnavailableError` with one line naming what is missing and the command that fetches it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, MissingDependencyError

log = logging.getLogger(__name__)

BACKBONE_REPO = "ByteDance-Seed/BAGEL-7B-MoT"
SIGMA_REPOS = ("Xiaoyan667/SIGMA", "Xiaoyan667/SIGMA-Model")  # the SIGMA README names both; tried in order
CONFIG_PATTERNS = (
    "llm_config.json",
    "vit_config.json",
    "ae.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
WEIGHT_NAMES = ("ema.safetensors", "model.safetensors")
MODEL_CHOICES: tuple[str, ...] = ("sigma", "bagel", "shapes", "tiny")  # the names --model knows besides repo ids
ALIASES = {"sigma": "sigma", "bagel": BACKBONE_REPO, "bagel-7b-mot": BACKBONE_REPO}


class WeightsUnavailableError(CheckpointError):
    """Weights are neither cached nor downloadable right now."""


@dataclass(frozen=True)
class ResolvedSource:
    """A loadable checkpoint: configs/tokenizer/autoencoder in ``config_dir``; weights in ``weights``."""

    name: str
    config_dir: Path
    weights: Path | None = None  # None: the weights file inside config_dir
    preset: str | None = None  # a released model's preset (model.presets.PRESETS): what it was trained to read


@dataclass(frozen=True)
class HubOptions:
    cache_dir: str | None = None
    token: str | None = None
    revision: str | None = None
    local_files_only: bool = False


def is_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists() and not source.startswith((".", "/", "~"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def snapshot(
    repo: str,
    patterns: Sequence[str],
    opts: HubOptions,
    what: str,
    command: str,
    alternative: str = "or pass --model DIR",
    missing_ok: bool = False,
    repo_type: str = "model",
) -> Path:
    """Download (or find in the cache) the files of ``repo`` matching ``patterns``; one-line errors.

    ``what`` and ``command`` name the files and the command that fetches them where there is network access;
    ``repo_type`` is ``model`` or ``dataset``.
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a core dependency
        raise MissingDependencyError("huggingface_hub", None, "Downloading weights") from None
    try:
        path = snapshot_download(
            repo,
            repo_type=repo_type,
            allow_patterns=list(patterns),
            cache_dir=opts.cache_dir,
            token=opts.token,
            revision=opts.revision,
            local_files_only=opts.local_files_only or offline(),
        )
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: it must come first
        raise WeightsUnavailableError(
            f"{repo} needs an accepted licence and a token: accept it on its page, then set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        if missing_ok:
            raise
        raise CheckpointError(f"{repo} does not exist on the Hugging Face hub (or your token cannot see it)") from None
    except LocalEntryNotFoundError:
        where = opts.cache_dir or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise WeightsUnavailableError(
            f"{what} ({repo}): not in the cache at {where}, and the hub cannot be reached: "
            f"run `{command}` where there is network access" + (f", {alternative}" if alternative else "")
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsUnavailableError(f"Downloading {repo} failed: {str(exc).splitlines()[0]}") from None
    return Path(path)


def _first_repo(repos: Sequence[str], patterns: Sequence[str], opts: HubOptions, what: str, command: str) -> Path:
    from huggingface_hub.errors import RepositoryNotFoundError

    for repo in repos:
        try:
            return snapshot(repo, patterns, opts, what, command, missing_ok=True)
        except RepositoryNotFoundError:
            log.info("%s not found on the hub; trying the next name", repo)
    raise WeightsUnavailableError(f"None of {', '.join(repos)} exists on the hub (or the token cannot see it)")


def weights_in(directory: Path) -> Path | None:
    """The weights file a checkpoint directory holds (EMA first), or None."""
    return next((directory / n for n in WEIGHT_NAMES if (directory / n).is_file()), None)


def resolve(source: str, opts: HubOptions = HubOptions(), option: str = "--model") -> ResolvedSource:
    """Turn a ``--model`` value into local paths, downloading what is missing (and only what is needed); ``option``:
    how errors name the value (another command's argument)."""
    command = f"sigma download {source}"  # the name as given (bagel, not the repository it stands for)
    source = ALIASES.get(source.lower(), source) if not Path(source).exists() else source
    if source.lower() == "shapes" and not Path(source).exists():
        return ResolvedSource("shapes", shipped_shapes_model())
    if Path(source).expanduser().exists():
        directory = Path(source).expanduser()
        if (directory / "latest").is_file():  # a finetune run: its newest checkpoint
            directory = directory / (directory / "latest").read_text().strip()
        if not directory.is_dir():
            raise CheckpointError(f"{option} {source} is a file; pass the checkpoint directory that contains it")
        if (directory / "llm_config.json").is_file():
            return ResolvedSource(directory.name, directory)
        weights = weights_in(directory)
        if weights is None:
            raise CheckpointError(
                f"{directory} is not a checkpoint directory: it has neither llm_config.json nor "
                f"{' / '.join(WEIGHT_NAMES)}"
            )
        backbone = snapshot(BACKBONE_REPO, CONFIG_PATTERNS, opts, "BAGEL's configs and tokenizer", command)
        return ResolvedSource(directory.name, backbone, weights)
    if source == "sigma":
        backbone = snapshot(BACKBONE_REPO, CONFIG_PATTERNS, opts, "BAGEL's configs and tokenizer", command)
        weights_dir = _first_repo(
            SIGMA_REPOS, ("ema.safetensors", "*.json", "README.md"), opts, "SIGMA weights", command
        )
        weights = weights_in(weights_dir)
        if weights is None:
            raise WeightsUnavailableError(f"The SIGMA repository at {weights_dir} has no ema.safetensors")
        return ResolvedSource("sigma", backbone, weights, preset="sigma-7b")
    if not is_repo_id(source):
        raise CheckpointError(
            f"{option} {source}: no such directory, and not a Hugging Face repo id (owner/name) "
            f"or one of: {', '.join(MODEL_CHOICES)}"
        )
    if source == BACKBONE_REPO:
        files = snapshot(source, (*CONFIG_PATTERNS, "ema.safetensors"), opts, "BAGEL weights", command)
        return ResolvedSource("bagel", files, preset="bagel-7b-mot")
    # Any other repository: fetch its small files first to see whether it carries its own configs.
    meta = snapshot(source, ("*.json", "*.txt", "*.md"), opts, f"{source} configs", command)
    if (meta / "llm_config.json").is_file():
        full = snapshot(source, (*CONFIG_PATTERNS, "ema.safetensors", "sigma_config.json"), opts, "weights", command)
        return ResolvedSource(source, full)
    weights_dir = snapshot(source, ("ema.safetensors",), opts, f"{source} weights", command)
    backbone = snapshot(BACKBONE_REPO, CONFIG_PATTERNS, opts, "BAGEL's configs and tokenizer", command)
    weights = weights_in(weights_dir)
    if weights is None:
        raise WeightsUnavailableError(f"{source} has no ema.safetensors")
    return ResolvedSource(source, backbone, weights)


def shipped_shapes_model() -> Path:
    """The ``shapes`` model shipped inside the package (trained on a CPU by ``sigma shapes train``)."""
    directory = Path(__file__).resolve().parent / "shapes" / "weights"
    if not (directory / "llm_config.json").is_file():
        raise CheckpointError(
            f"The shapes model is not in this installation ({directory}); train it with `sigma shapes train` and "
            "load the result with --model runs/shapes/model"
        )
    return directory


def cache_location(opts: HubOptions = HubOptions()) -> Path:
    if opts.cache_dir:
        return Path(opts.cache_dir)
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)
