"""The one record of an output: written into every PNG, printed by ``--json``, listed in batch summaries.

A record holds the whole request minus image bytes: the user's prompt, the structure controls, the settings with
the seed actually used and the resolved size, the model source, mode and layout, every image the model received
(name, role, source file, pixel hash), the exact sequence, and the version. ``sigma generate --from X.png``
rebuilds the same request from it, so any output of the CLI, the web UI or ``sigma batch`` is reproduced bit for
bit on the same machine when the reference files are given again (``--image img1=FILE`` when they moved).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import GenerationConfig
from .errors import InputError
from .structure import ControlSpec

RECORD_KEY = "sigma:record"
LEGACY_KEY = "sigma:params"  # format 1, written by sigma generate before records existed
FORMAT = 2


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sigma-studio")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class GenerationRecord:
    prompt: str
    config: dict  # GenerationConfig fields; seed = the seed used, size = [height, width] as generated
    images: tuple[dict, ...] = ()  # {"name", "role", "file", "sha256"} per image the model received
    controls: dict = field(default_factory=dict)  # ControlSpec fields (paths absolute); {} when none
    model: str = ""  # what loads the model again: an alias, a repo id or an absolute directory
    mode: str = ""
    layout: str = ""
    sequence: tuple[dict, ...] = ()  # what the model received, in order
    version: str = field(default_factory=package_version)
    format: int = FORMAT
    source: dict = field(default_factory=dict)  # where the request came from (batch: the dataset row)

    # -- conversions ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> GenerationRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("images", "sequence"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)

    def png_info(self) -> dict[str, str]:
        """PNG text chunks: the record, and a one-paragraph summary other tools display."""
        c = self.config
        summary = (
            f"{self.prompt}\nSteps: {c['steps']}, CFG text: {c['cfg_text_scale']}, CFG image: {c['cfg_img_scale']}, "
            f"Seed: {c['seed']}, Size: {c['size'][1]}x{c['size'][0]}, Model: {self.model}, Layout: {self.layout}"
        )
        return {RECORD_KEY: json.dumps(self.to_json()), "parameters": summary}

    # -- what a replay needs -------------------------------------------------------------------------------------
    def generation_config(self) -> GenerationConfig:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.items()}
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        return GenerationConfig(**{k: v for k, v in values.items() if k in known})

    def control_spec(self) -> ControlSpec:
        return ControlSpec.from_json(self.controls)

    def reference_files(self) -> dict[str, str | None]:
        """The user's references by name, with the file each was read from (None: given as pixels)."""
        return {img["name"]: img.get("file") for img in self.images if img.get("role") == "reference"}

    def reference_hashes(self) -> dict[str, str]:
        return {img["name"]: img.get("sha256", "") for img in self.images if img.get("role") == "reference"}


def record_of(request, result_seed: int, *, model: str, mode: str, layout: str, source: dict | None = None):
    """The record of a request as it was generated."""
    config = dataclasses.asdict(request.config.replace(seed=result_seed))
    config["size"] = list(request.size)
    return GenerationRecord(
        prompt=request.prompt,
        config=config,
        images=tuple(img.describe() for img in request.images),
        controls={} if request.controls.empty else request.controls.to_json(),
        model=model,
        mode=mode,
        layout=layout,
        sequence=tuple(request.sequence()),
        source=source or {},
    )


def read_record(path: str | Path) -> GenerationRecord:
    """The record stored in a PNG written by SIGMA Studio (any front end, or format 1 of ``sigma generate``)."""
    from .images import open_image

    if not Path(path).is_file():
        raise InputError(f"--from {path}: file not found")
    text = open_image(path).info
    try:
        if RECORD_KEY in text:
            return GenerationRecord.from_json(json.loads(text[RECORD_KEY]))
        if LEGACY_KEY in text:
            return _from_legacy(json.loads(text[LEGACY_KEY]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"--from {path}: the stored settings are unreadable ({exc})") from None
    if any(key.startswith("sigma:") for key in text):
        raise InputError(
            f"--from {path} was written by an older SIGMA Studio, before PNGs carried the full record: its settings "
            "cannot be replayed; generate it again with this version"
        )
    raise InputError(f"--from {path}: this PNG carries no SIGMA Studio record (it was not written by SIGMA Studio)")


def _from_legacy(params: dict) -> GenerationRecord:
    images = tuple({"name": k, "role": "reference", "file": v, "sha256": ""} for k, v in params["images"].items())
    controls = {k: v for k, v in (params.get("controls") or {}).items() if v not in (None, [], "")}
    return GenerationRecord(
        prompt=params["prompt"], config=params["config"], images=images, controls=controls, model=params["model"]
    )
