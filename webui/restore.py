"""Filling the page from a record (a history entry) or from an example: the same values, in the settings' order.

The settings are returned in the order of the page's settings widgets (the fields of webui/page.py's ``Settings``):
preset, width, height, steps, cfg_text, cfg_img, cfg_low, cfg_high, renorm, shift, seed, count, group_mask, speed,
think;
the layout widgets come first. The browser's history (file names and captions, newest first) is kept here too.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from sigma_studio.model.config import DEFAULT_SPEED, SPEEDS, GenerationConfig

from .api_params import AUTO_SIZE, COUNT, RANDOM_SEED
from .guard import store_mask, stored_output
from .state import Slot, UIState, read_prompt, set_image

HISTORY_SIZE = 40  # results the browser keeps


def history_entry(path: str, record: dict) -> dict:
    """What the browser keeps of one result: the PNG's file *name* (never a server path: the server finds the file
    again in its outputs folder, webui/guard.py) and a caption. The record is read back from the PNG itself."""
    return {"image": Path(path).name, "caption": caption_of(record)}


def _history_list(history) -> list[dict]:
    """The browser's history entries that have the shape of one (it is the browser's: anything may come)."""
    return [e for e in (history if isinstance(history, list) else [])[:HISTORY_SIZE] if isinstance(e, dict)]


def history_with(entries: list[dict], history) -> list[dict]:
    """The browser's history with ``entries`` (the newest results) first, cut to its size."""
    return [*entries, *_history_list(history)][:HISTORY_SIZE]


def history_files(history, outputs: Path) -> list[Path]:
    """The output PNGs the browser's history names, in its order (at most 40; anything else in it is ignored)."""
    names = [e.get("image") for e in _history_list(history)]
    return [path for name in names if (path := stored_output(name, outputs)) is not None]


def caption_of(record: dict) -> str:
    seed = (record.get("config") or {}).get("seed")
    prompt = str(record.get("prompt", ""))
    return f"seed {seed} · {prompt[:40]}{'…' if len(prompt) > 40 else ''}"


def settings_values(config: dict, count: int = COUNT) -> list:
    size = config.get("size")
    preset, width, height = ("custom", size[1], size[0]) if size else (AUTO_SIZE, gr.update(), gr.update())
    low, high = config["cfg_interval"]
    group_mask, think = config.get("group_mask"), config.get("think")
    seed, every = config.get("seed"), config.get("guidance_every", GenerationConfig.guidance_every)
    return [
        preset, width, height, config["steps"], config["cfg_text_scale"], config["cfg_img_scale"], low, high,
        config["cfg_renorm_type"], config["timestep_shift"], RANDOM_SEED if seed is None else seed,
        count, gr.update() if group_mask is None else group_mask,
        next((name for name, n in SPEEDS.items() if n == every), DEFAULT_SPEED),
        gr.update() if think is None else think,
    ]  # fmt: skip


def _state(prompt: str, references: dict[str, str], slots: int = 1) -> UIState:
    numbers = [int(name[3:]) for name in references]
    state = UIState("", tuple(Slot() for _ in range(max([slots, *numbers]))))
    for name, path in references.items():
        state = set_image(state, int(name[3:]) - 1, path)
    return read_prompt(state, prompt)


NO_LAYOUT = [gr.update(selected="none"), "none", None, [], [], [], None]


def _layout_values(controls: dict, usable, mask_name) -> tuple[list, list[str]]:
    """[tab, layout kind, canny image, box rows, 3-D box rows, mask rows, background] for recorded controls (Canny,
    boxes and SIGMA-GEN's subjects; others open no tab), and what of them is gone. ``usable(path)`` gives a recorded
    file to show, or None; ``mask_name(path)`` the name of a mask this server stored, or None (its row is left out)."""
    if controls.get("canny"):
        canny = usable(controls["canny"])
        gone = [] if canny else ["the Canny picture"]
        return [gr.update(selected="canny"), "canny", None if canny is None else str(canny), [], [], [], None], gone
    rows, solid, masks, gone = [_row(b, "") for b in controls.get("boxes", [])], [], [], []
    for source, _, placement in (s.partition("@") for s in controls.get("subjects", [])):
        kind, _, spec = placement.partition("=")
        if kind == "box":
            rows.append(_row(spec, source))
        elif kind == "box3d":
            values = [float(v) for v in spec.split(",")]
            solid.append([*values, *[0.0] * (7 - len(values)), "", source])  # yaw 0 when not given
        elif kind == "mask":
            name = mask_name(spec.split(",depth=")[0])
            masks += [[name, "", source]] if name else []
            gone += [] if name else [f"the mask of {source}"]
    background = usable(controls["background"]) if controls.get("background") else None
    gone += ["the background"] if controls.get("background") and background is None else []
    if rows or solid or masks:
        return [gr.update(selected="boxes"), "boxes", None, rows, solid, masks, background and str(background)], gone
    return list(NO_LAYOUT), gone


def _row(spec: str, ref: str) -> list:
    coords, _, label = spec.partition(":")
    return [*(float(v) for v in coords.split(",")), label, ref]


def restore_values(record: dict, defaults: GenerationConfig, usable=None, mask_name=None) -> tuple[UIState, list]:
    """(state, [layout values..., settings values...]) from a result's record; references whose files are gone
    leave their slot empty (the page says so under the prompt). ``usable(path)`` gives the file to use for a
    recorded reference or background, or None (the server passes its rule: only files inside its own folders);
    ``mask_name(path)`` the stored name of a recorded mask (the server's own uploads), or None."""
    usable = usable or (lambda path: path if Path(path).is_file() else None)
    refs = {
        img["name"]: img["file"]
        for img in record.get("images", [])
        if img.get("role") == "reference" and img.get("file")
    }
    present = {name: str(found) for name, path in refs.items() if (found := usable(path)) is not None}
    state = _state(record.get("prompt", ""), present, max([1, *(int(n[3:]) for n in refs)]))
    layout, gone = _layout_values(record.get("controls") or {}, usable, mask_name or (lambda path: None))
    missing = sorted(set(refs) - set(present)) + gone
    if missing:
        gone_now = "no longer exists: upload it" if len(missing) == 1 else "no longer exist: upload them"
        state = UIState(state.prompt, state.slots, f"{', '.join(missing)} {gone_now} again")
    config = {**_config_dict(defaults), **record.get("config", {})}
    return state, [*layout, *settings_values(config)]


def example_values(example, defaults: GenerationConfig, uploads: Path) -> tuple[UIState, list]:
    """(state, values) that fill every field and setting from an example. An example's masks are copied into
    ``uploads`` under the names the page's own drawn masks get, so the masks table holds them as it holds those."""
    state = _state(example.prompt, {f"img{k + 1}": p for k, p in enumerate(example.paths())})
    if example.layout == "canny" and example.layout_image:
        canny = str(Path(example.paths()[0]).parent / example.layout_image)
        layout = [gr.update(selected="canny"), "canny", canny, [], [], [], None]
    elif example.boxes or example.boxes3d or example.masks:
        masks = [[copy_mask(example.folder / name, uploads), label, ref] for name, label, ref in example.masks]
        background = str(example.folder / example.background) if example.background else None
        layout = [gr.update(selected="boxes"), "boxes", None, [list(b) for b in example.boxes],
                  [list(b) for b in example.boxes3d], masks, background]  # fmt: skip
    else:
        layout = list(NO_LAYOUT)
    config = _config_dict(defaults) | {"size": None, "seed": 0} | dict(example.settings)
    return state, [*layout, *settings_values(config)]


def copy_mask(source: Path, uploads: Path) -> str:
    """``source`` stored in ``uploads`` as a page-drawn mask is (:func:`~webui.guard.store_mask`); returns its name."""
    from PIL import Image

    with Image.open(source) as img:
        return store_mask(img.convert("L"), uploads).name


def _config_dict(config: GenerationConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(config)
