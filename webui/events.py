"""The page's events. Everything but generation runs outside the queue (``queue=False``), so a click on the canvas
or a token change is never stuck behind a running job; every page event is undocumented in the API, which keeps
the API page to the named endpoints of webui/api.py."""

from __future__ import annotations

import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from sigma_studio.model.errors import InputError
from sigma_studio.model.images import save_png

from . import handlers as h
from . import placements as pl
from .display import CANVAS_SIDE, canvas_image, error_html
from .guard import stored_mask, stored_output, within_any
from .jobs import Cancelled, Jobs, clean_old_files
from .restore import caption_of, example_values, history_entry, restore_values
from .state import MAX_SLOTS, Slot, UIState, add_slot, move_slot, read_prompt, remove_slot, set_image, set_tokens

UI = dict(api_visibility="undocumented", queue=False)  # lightweight page events
HISTORY_SIZE = 40  # results the browser keeps


def wire(p: SimpleNamespace, pipe, *, outputs: Path, jobs: Jobs, gpu_wrapper, keep_hours: float, limits) -> None:
    p.slot_outputs = [p.prompt, p.error, *p.slot_cols, *p.slot_imgs, *p.slot_tokens, p.box_ref]
    p.layout_inputs = [p.layout_kind, p.canny_src, p.canny_low, p.canny_high, p.canny_blur, p.depth_src,
                       p.depth_map, p.boxes, p.background, p.boxes3d, p.masks]  # fmt: skip
    render = partial(_render, p)
    p.limits = limits
    p.outputs, p.uploads = outputs, outputs / "uploads"  # downscaled uploads and drawn masks (cleaned with results)

    def refresh_preview(st, *values):
        try:
            layout = _layout(values[:-3], p.uploads)
        except InputError as exc:
            return error_html(str(exc))
        return h.preview_html(st or UIState(), layout, pipe.arch, _output_size(*values[-3:], arch=pipe.arch))

    # after every change of the references, the layout or the size, the preview shows the request the model would get
    p.size_inputs = [p.preset, p.width, p.height]
    p.refresh = lambda event: event.then(refresh_preview, [p.state, *p.layout_inputs, *p.size_inputs], [p.preview],
                                         **UI)  # fmt: skip
    _wire_slots(p, render)
    _wire_layout(p, pipe)
    _wire_generate(p, pipe, outputs, jobs, gpu_wrapper, keep_hours)
    _wire_history_and_examples(p, render)


def _render(p, st: UIState, write_prompt: bool = True) -> list:
    filled = sum(s.filled for s in st.slots)
    return [
        st.prompt if write_prompt else gr.update(),  # never overwrite what the user is typing
        error_html(st.error),
        *[gr.update(visible=k < len(st.slots)) for k in range(MAX_SLOTS)],
        *[gr.update(value=st.slots[k].image if k < len(st.slots) else None) for k in range(MAX_SLOTS)],
        *[gr.update(value=list(st.slots[k].tokens) if k < len(st.slots) else []) for k in range(MAX_SLOTS)],
        gr.update(choices=["", *st.names()[: max(filled, len(st.slots))]]),
    ]


def _wire_slots(p, render) -> None:
    def apply(fn):
        def run_fn(st, *args):
            new = fn(st or UIState(), *args)
            return [new, *render(new)]

        return run_fn

    def on_prompt(st, text):
        st = st or UIState()
        if not isinstance(text, str) or len(text) > p.limits.max_prompt_chars:  # never parsed
            size = len(text) if isinstance(text, str) else 0
            new = replace(
                st, error=f"The prompt is {size} characters; at most {p.limits.max_prompt_chars} are accepted"
            )
            return [new, *render(new, write_prompt=False)]
        new = read_prompt(st, text)
        return [new, *render(new, write_prompt=False)]

    outs = [p.state, *p.slot_outputs]
    p.refresh(p.prompt.input(on_prompt, [p.state, p.prompt], outs, trigger_mode="always_last", **UI))
    p.refresh(p.add.click(apply(add_slot), [p.state], outs, **UI))
    for k in range(MAX_SLOTS):
        p.refresh(p.slot_tokens[k].input(apply(partial(_tokens, k=k)), [p.state, p.slot_tokens[k]], outs, **UI))
        upload = apply(partial(_upload, k=k, folder=p.uploads, limits=p.limits))
        p.refresh(p.slot_uploads[k].upload(upload, [p.state, p.slot_uploads[k]], outs, **UI))
        p.refresh(p.slot_imgs[k].upload(upload, [p.state, p.slot_imgs[k]], outs, **UI))
        p.refresh(p.slot_imgs[k].clear(apply(partial(_clear, k=k)), [p.state], outs, **UI))
        tables = [p.boxes, p.boxes3d, p.masks]
        p.refresh(p.slot_rm[k].click(partial(_remove, k=k, render=render), [p.state, *tables], [*outs, *tables], **UI))
        p.refresh(p.slot_up[k].click(partial(_move_up, k=k, render=render), [p.state, *tables], [*outs, *tables], **UI))
    p.refresh(p.send.click(apply(h.send_to_references), [p.state, p.last_output], outs, **UI))
    p.render_state = lambda st: [st, *render(st)]


def _wire_layout(p, pipe) -> None:
    side = CANVAS_SIDE  # boxes are fractions of the picture: the canvas size is only for drawing and clicking
    for tab, kind in ((p.tab_none, "none"), (p.tab_canny, "canny"), (p.tab_depth, "depth"), (p.tab_boxes, "boxes")):
        p.refresh(tab.select(partial(_constant, kind), None, [p.layout_kind], **UI))
    for widget in (p.canny_src, p.canny_low, p.canny_high, p.canny_blur):
        widget.change(_canny_preview, [p.canny_src, p.canny_low, p.canny_high, p.canny_blur],
                      [p.canny_prev, p.error], **UI)  # fmt: skip
    p.depth_btn.click(_depth_preview, [p.depth_src, p.depth_map], [p.depth_prev, p.error],
                      api_visibility="undocumented")  # fmt: skip

    def draw(rows, solid, masks, corner=None):
        masks = [[str(path), *row[1:]] for row in pl.mask_rows(masks) if (path := stored_mask(row[0], p.uploads))]
        return canvas_image(pl.box_rows(rows), side, corner, pl.box3d_rows(solid), masks)

    def click_box(corner_xy, rows, solid, masks, label, ref, evt: gr.SelectData):
        rows = pl.box_rows(rows)
        if corner_xy is None:
            return tuple(evt.index), rows, draw(rows, solid, masks, tuple(evt.index))
        rows = [*rows, _box_row(tuple(corner_xy), tuple(evt.index), side, label, ref)]
        return None, rows, draw(rows, solid, masks)

    placements = [p.boxes, p.boxes3d, p.masks]
    p.canvas.select(click_box, [p.corner, *placements, p.box_label, p.box_ref], [p.corner, p.boxes, p.canvas],
                    trigger_mode="multiple", **UI)  # fmt: skip
    p.clear_boxes.click(lambda: (None, [], [], [], canvas_image([], side)), None, [p.corner, *placements, p.canvas],
                        **UI)  # fmt: skip
    p.add_box3d.click(lambda solid, label, ref: [*pl.box3d_rows(solid), [*pl.BOX3D_DEFAULT, label or "", ref or ""]],
                      [p.boxes3d, p.box_label, p.box_ref], [p.boxes3d], **UI)  # fmt: skip
    p.add_mask.click(partial(_add_mask, folder=p.uploads), [p.mask_draw, p.masks, p.box_label, p.box_ref],
                     [p.masks, p.error], **UI)  # fmt: skip
    for table in placements:
        table.change(draw, placements, [p.canvas], **UI)
        table.change(partial(_routing, arch=pipe.arch, uploads=p.uploads),
                     [p.state, *p.layout_inputs, *p.size_inputs], [p.routing], **UI)  # fmt: skip

    fit = partial(_fit_mask_editor, arch=pipe.arch)  # the mask is drawn at the output's aspect
    for trigger in (p.preset, p.width, p.height, p.background):
        trigger.change(fit, [p.mask_draw, p.preset, p.width, p.height, p.background], [p.mask_draw], **UI)
    for trigger in [*p.layout_inputs[1:], *p.size_inputs]:  # the preview shows the controls the request carries
        p.refresh(trigger.change(lambda: None, None, None, **UI))
    p.preset.change(lambda preset: [gr.update(interactive=preset == "custom")] * 2, [p.preset],
                    [p.width, p.height], **UI)  # fmt: skip


def _wire_generate(p, pipe, outputs: Path, jobs: Jobs, gpu_wrapper, keep_hours: float) -> None:
    def start():
        return jobs.submit(), gr.update(visible=False), gr.update(visible=True), ""

    def generate(st, history, token, *values, progress=gr.Progress()):  # noqa: B008
        settings = dict(zip(p.setting_names, values[len(p.layout_inputs) :], strict=True))
        clean_old_files(outputs, keep_hours)
        clean_old_files(p.uploads, keep_hours)

        def report(done: int, total: int, left: float | None) -> None:
            eta = f" · about {left:.0f} s left" if left is not None else ""
            progress((done, total), desc=f"step {done}/{total}{eta}")

        keep = gr.update()
        try:
            layout = _layout(values[: len(p.layout_inputs)], p.uploads)
            result = h.generate(pipe, st or UIState(), layout, settings, outputs, report, jobs=jobs, token=token)
        except Cancelled as exc:
            if not exc.kept:
                return keep, "**Cancelled**: nothing was written", keep, history, keep, keep, ""
            paths = [path for path, _ in exc.kept]  # the finished images stay: shown, listed and in the history
            history = [*[history_entry(*kept) for kept in exc.kept], *_history_list(history)][:HISTORY_SIZE]
            info = f"**Cancelled** after {len(paths)} of {int(settings.get('count') or 1)} images: the finished "
            info += f"{'one is' if len(paths) == 1 else 'ones are'} kept ({', '.join(Path(q).name for q in paths)})"
            return paths, info, paths, history, keep, paths[0], ""
        except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
            return keep, "", keep, history, keep, keep, error_html(h.message_of(exc))
        finally:
            jobs.discard(token)  # (a job refused before it reached the queue leaves no token behind)
        entries = [history_entry(path, record) for path, record in zip(result.paths, result.records, strict=True)]
        history = [*entries, *_history_list(history)][:HISTORY_SIZE]
        return result.paths, result.info, result.paths, history, result.seeds, result.paths[0], ""

    def stop(token):
        found = jobs.cancel(token)
        return ("**Cancelling…**" if found else ""), gr.update(visible=True), gr.update(visible=False)

    gen_fn = gpu_wrapper(generate) if gpu_wrapper is not None else generate
    outs = [p.output, p.info, p.download, p.history, p.last_seeds, p.last_output, p.error]
    p.run.click(start, None, [p.token, p.run, p.stop, p.error], **UI).then(
        gen_fn, [p.state, p.history, p.token, *p.layout_inputs, *p.settings], outs,
        concurrency_limit=jobs.concurrency, concurrency_id="gpu", show_progress_on=[p.output],
        api_name="page_generate", api_visibility="undocumented",
    ).then(lambda: (gr.update(visible=True), gr.update(visible=False)), None, [p.run, p.stop], **UI)  # fmt: skip
    p.stop.click(stop, [p.token], [p.info, p.run, p.stop], **UI)
    p.reuse.click(lambda seeds: seeds[0] if seeds else gr.update(), [p.last_seeds], [p.seed], **UI)


def _wire_history_and_examples(p, render) -> None:
    from gradio.utils import get_upload_folder

    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model.config import GenerationConfig
    from sigma_studio.model.errors import SigmaError
    from sigma_studio.model.record import read_record

    side_outputs = [p.state, *p.slot_outputs, p.tabs, p.layout_kind, p.canny_src, p.boxes, *p.settings]
    # the history is kept by the browser, so it is untrusted: an entry names one of this server's output PNGs by its
    # file name, and everything restored from it is read from that PNG (webui/guard.py)
    shown_files = partial(_history_files, outputs=p.outputs)

    def show_history(history):
        gallery = []
        for path in shown_files(history):
            try:
                gallery.append((str(path), caption_of(read_record(path).to_json())))
            except SigmaError:  # a PNG of this folder without a readable record: no entry
                continue
        return gallery

    p.history.change(show_history, [p.history], [p.history_gallery], **UI)
    p.clear_history.click(lambda: [], None, [p.history], **UI)
    folders = (get_upload_folder(), p.outputs, EXAMPLES)  # where a restored reference may come from

    def restore(history, evt: gr.SelectData):
        shown = shown_files(history)
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(shown):
            return [gr.update()] * (len(side_outputs))
        try:
            record = read_record(shown[evt.index]).to_json()
        except SigmaError as exc:
            st = replace(UIState(), error=f"This result cannot be restored: {h.message_of(exc)}")
            return [st, *render(st), *[gr.update()] * (len(side_outputs) - 1 - len(p.slot_outputs))]
        state, values = restore_values(record, GenerationConfig(), partial(within_any, folders=folders))
        return [state, *render(state), *values]

    p.refresh(p.history_gallery.select(restore, [p.history], side_outputs, **UI))

    def load_example(evt: gr.SelectData):
        state, values = example_values(p.examples[evt.index], GenerationConfig())
        return [state, *render(state), *values]

    p.refresh(p.examples_gallery.select(load_example, None, side_outputs, **UI))
    # the page's load event renders the references and the history but leaves the prompt and the state alone: on a
    # slow server it can arrive after the user (or a test) has started typing, and must not undo that
    p.on_load = lambda st, history: [*render(st or UIState())[1:], show_history(history)]
    p.load_outputs = [*p.slot_outputs[1:], p.history_gallery]


def _history_list(history) -> list[dict]:
    """The browser's history entries that have the shape of one (it is the browser's: anything may come)."""
    return [e for e in (history if isinstance(history, list) else [])[:HISTORY_SIZE] if isinstance(e, dict)]


def _history_files(history, outputs: Path) -> list[Path]:
    """The output PNGs the browser's history names, in its order (at most 40; anything else in it is ignored)."""
    names = [e.get("image") for e in _history_list(history)]
    return [path for name in names if (path := stored_output(name, outputs)) is not None]


def _constant(value):
    return value


def _remove(st: UIState, *tables, k: int, render):
    new = remove_slot(st, k)
    mapping = {k + 1: None} | {n: n - 1 for n in range(k + 2, len(st.slots) + 1)}
    return [new, *render(new), *pl.remap_placements(tables, mapping)]


def _move_up(st: UIState, *tables, k: int, render):
    new = move_slot(st, k, -1)
    mapping = {k + 1: k, k: k + 1} if k > 0 else {}
    return [new, *render(new), *pl.remap_placements(tables, mapping)]


def _tokens(st: UIState, tokens, k: int) -> UIState:
    return set_tokens(st, k, list(tokens or []))


def _upload(st: UIState, path, k: int, folder: Path, limits) -> UIState:
    if not path:
        return st
    usable, message = h.prepare_upload(path, folder, limits)
    if usable is None:
        return replace(st, error=f"Upload refused: {message}")
    new = set_image(st, k, usable)
    return replace(new, error=message and f"Note: {message}")


def _clear(st: UIState, k: int) -> UIState:
    slots = list(st.slots)
    slots[k] = Slot(None, slots[k].tokens)
    return replace(st, slots=tuple(slots), error="")


def _box_row(corner: tuple[int, int], point: tuple[int, int], side: int, label: str, ref: str) -> list:
    """Two clicked corners (canvas pixels) -> a table row in fractions of the image."""
    (x0, y0), (x1, y1) = corner, point
    frac = [round(v / side, 4) for v in (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))]
    return [*frac, label or "", ref or ""]


def _add_mask(editor, masks, label: str, ref: str, folder: Path):
    """The drawn (or uploaded) mask saved as a PNG under ``folder`` and added to the masks table."""
    try:
        mask = pl.editor_mask(editor)
    except InputError as exc:
        return pl.mask_rows(masks), error_html(str(exc))
    path = save_png(mask, Path(folder) / f"mask-{uuid.uuid4().hex[:12]}.png")
    return [*pl.mask_rows(masks), [path.name, label or "", ref or ""]], ""


def _fit_mask_editor(editor, preset, width, height, background, arch):
    from sigma_studio.model.structure import ControlSpec, subject_size

    try:
        size = _output_size(preset, width, height, arch)
        size = subject_size(ControlSpec(background=background), arch, size) if background else size
    except (InputError, OSError, TypeError, ValueError):  # a half-typed size or an unreadable picture: wait
        return gr.update()
    new = pl.editor_for_output(editor, size)
    if new is None:
        return gr.update()
    height, width = new["background"].shape[:2]
    return gr.update(value=new, label=f"{pl.EDITOR_LABEL} · {width}x{height}, the output's shape")


def _output_size(preset, width, height, arch) -> tuple[int, int] | None:
    """The settings' output size (None: automatic, or a size still being typed)."""
    try:
        return h.size_of(preset, width, height, arch.max_image_size)
    except (TypeError, ValueError):
        return None


def _routing(st, *values, arch, uploads: Path):
    try:
        layout = replace(_layout(values[:-3], uploads), kind="boxes")
    except InputError:
        return None
    return h.routing_preview(layout, st or UIState(), _output_size(*values[-3:], arch=arch), arch)


def _layout(values, uploads: Path) -> h.LayoutInputs:
    """The layout tab's values, with each row of the masks table (the name of a mask the page drew: the browser
    never holds a server path) turned into that file of ``uploads``; a name of anything else is refused."""
    layout = h.LayoutInputs(*values)
    masks = []
    for row in pl.mask_rows(layout.masks):
        path = stored_mask(row[0], uploads)
        if path is None:
            name = str(row[0])[:60]
            raise InputError(f"The mask {name!r} is not one drawn on this page: add masks with '+ mask subject'")
        masks.append([str(path), *row[1:]])
    return replace(layout, masks=masks)


def _canny_preview(path, low, high, blur):
    from sigma_studio.model.control import canny_edges
    from sigma_studio.model.images import open_image, to_rgb

    if not path:
        return None, ""
    try:
        return canny_edges(to_rgb(open_image(path)), int(low), int(high), int(blur)), ""
    except Exception as exc:  # noqa: BLE001 - a message on the page, never Gradio's generic error
        return None, error_html(h.message_of(exc))


def _depth_preview(image, depth_map):
    try:
        return h.depth_preview(image, depth_map), ""
    except gr.Error as exc:
        return None, error_html(str(exc.message))
