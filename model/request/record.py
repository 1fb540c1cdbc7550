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
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GenerationConfig
from ..errors import InputError
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
    warnings: tuple[str, ...] = ()  # what the request builder warned (e.g. a control the model was not trained for)
    plan: str | None = None  # think mode: the plan the model wrote before drawing (an output: a replay writes it again)

    # -- conversions ---------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "the record") -> GenerationRecord:
        """A record from its JSON; a malformed one (a field of the wrong type) is an InputError naming ``source``."""
        if not isinstance(data, dict):
            raise InputError(f"{source} is malformed: it must be an object (got {_kind(data)})")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        _check_fields(values, source)
        for key in ("images", "sequence", "warnings"):
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


# The JSON type of every record field, and of every item of the list fields (read_record checks them all).
_FIELD_TYPES = {"prompt": (str, "a text"), "config": (dict, "an object"), "images": (list, "a list"),
                "controls": (dict, "an object"), "model": (str, "a text"), "mode": (str, "a text"),
                "layout": (str, "a text"), "sequence": (list, "a list"), "version": (str, "a text"),
                "format": (int, "a whole number"), "source": (dict, "an object"),
                "warnings": (list, "a list"), "plan": ((str, type(None)), "a text or null")}  # fmt: skip
_IMAGE_KEYS = {"name": str, "role": str, "file": (str, type(None)), "sha256": str}


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a text", type(None): "null", bool: "true/false"}.get(
        type(value), f"the number {value!r:.20}" if isinstance(value, int | float) else type(value).__name__
    )


def _check_fields(values: dict, source: str) -> None:
    if "prompt" not in values or "config" not in values:
        raise InputError(f"{source} is malformed: it has no {'prompt' if 'prompt' not in values else 'config'}")
    for key, value in values.items():
        kind, name = _FIELD_TYPES[key]
        allowed = (list, tuple) if kind is list else kind  # to_json() keeps the list fields as tuples
        if not isinstance(value, allowed) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{source} is malformed: {key} must be {name} (got {_kind(value)})")
    for k, img in enumerate(values.get("images", ()), start=1):
        bad = not isinstance(img, dict) or any(not isinstance(img.get(key, ""), t) for key, t in _IMAGE_KEYS.items())
        if bad or "name" not in img:
            raise InputError(f"{source} is malformed: image {k} must be an object with a name text (got {img!r:.60})")
    if not all(isinstance(item, dict) for item in values.get("sequence", ())):
        raise InputError(f"{source} is malformed: sequence must be a list of objects")
    if not all(isinstance(item, str) for item in values.get("warnings", ())):
        raise InputError(f"{source} is malformed: warnings must be a list of texts")


def record_of(
    request,
    result_seed: int,
    *,
    model: str,
    mode: str,
    layout: str,
    source: dict | None = None,
    plan: str | None = None,
):
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
        warnings=tuple(request.warnings),
        plan=plan,
    )


def read_record(path: str | Path) -> GenerationRecord:
    """The record stored in a PNG written by SIGMA Studio (any front end, or format 1 of ``sigma generate``)."""
    from ..images import open_image

    if os.path.isdir(path):
        raise InputError(f"--from {path} is a folder: name a PNG that SIGMA Studio wrote")
    if not os.path.isfile(path):
        raise InputError(f"--from {path}: file not found")
    text = open_image(path).info
    source = f"{path}'s record"
    try:
        if RECORD_KEY in text:
            return _checked(GenerationRecord.from_json(json.loads(text[RECORD_KEY]), source), source)
        if LEGACY_KEY in text:
            return _checked(_from_legacy(json.loads(text[LEGACY_KEY])), source)
    except InputError as exc:
        raise InputError(f"{exc}; it cannot be replayed: give the prompt and settings again, without --from") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"--from {path}: the stored settings are unreadable ({exc})") from None
    if any(key.startswith("sigma:") for key in text):
        raise InputError(
            f"--from {path} was written by an older SIGMA Studio, before PNGs carried the full record: its settings "
            "cannot be replayed; generate it again with this version"
        )
    raise InputError(f"--from {path}: this PNG carries no SIGMA Studio record (it was not written by SIGMA Studio)")


def _checked(record: GenerationRecord, source: str) -> GenerationRecord:
    """The record, once its fields have their types and its settings and controls build (a replay rebuilds them)."""
    _check_fields({f.name: getattr(record, f.name) for f in dataclasses.fields(record)}, source)
    try:
        record.generation_config()
        record.control_spec()
    except InputError as exc:
        raise InputError(f"{source} is malformed: {exc}") from None
    except TypeError as exc:  # an unexpected keyword or a value of the wrong shape
        raise InputError(f"{source} is malformed: {exc}") from None
    return record


def _from_legacy(params: dict) -> GenerationRecord:
    images = tuple({"name": k, "role": "reference", "file": v, "sha256": ""} for k, v in params["images"].items())
    controls = {k: v for k, v in (params.get("controls") or {}).items() if v not in (None, [], "")}
    return GenerationRecord(
        prompt=params["prompt"], config=params["config"], images=images, controls=controls, model=params["model"]
    )
