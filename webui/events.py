"""The page's events. Everything but generation runs outside the queue (``queue=False``), so a click on the canvas
or a token change is never stuck behind a running job; every page event is undocumented in the API, which keeps
the API page to the named endpoints of webui/api.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from gradio.events import Dependency

from sigma_studio.model.errors import InputError

from . import handlers as h
from . import placements as pl
from .api_params import COUNT
from .display import CANVAS_SIDE, NOTE, canvas_image, error_html
from .guard import store_mask, stored_mask, within_any
from .inputs import REFUSED, SCROLL_AFTER_RUN, SCROLL_TO_PROMPT, SCROLL_TO_RESULT, UI, wire_inputs
from .jobs import Cancelled, Jobs
from .limits import WebLimits
from .page import BoxesTab, Page
from .restore import caption_of, example_values, history_entry, history_files, history_with, restore_values
from .retention import UPLOADS
from .state import MAX_SLOTS, Slot, UIState, add_slot, edit_prompt, move_slot, remove_slot, set_image, set_tokens

if TYPE_CHECKING:
    from sigma_studio.model.run.pipeline import SigmaPipeline


@dataclass(frozen=True)
class Wiring:
    """What the page's events share besides their components: the pipeline, the folders files go to, the server's
    limits, and ``refresh``, which follows an event with a new preview of the request."""

    pipe: SigmaPipeline  # with a pool of pipelines (one per GPU): one of them
    outputs: Path
    uploads: Path  # downscaled uploads and drawn masks (kept as long as the results: webui/retention.py)
    limits: WebLimits
    refresh: Callable[[Dependency], Dependency]


def wire(page: Page, demo: gr.Blocks, pipe: SigmaPipeline, *, outputs: Path, jobs: Jobs, gpu_wrapper,
         limits: WebLimits) -> None:  # fmt: skip
    """Wire every event of ``page``, and ``demo``'s load event; call inside ``demo``'s context. After every change
    of the references, the layout or the size, the preview shows the request the model would get (``refresh``)."""
    uploads = outputs / UPLOADS

    def refresh_preview(st, *values):  # the values of page.preview_inputs
        try:
            layout = _layout(values[:-3], uploads)
        except InputError as exc:
            return h.not_ready(str(exc))
        return h.preview_html(st or UIState(), layout, pipe.arch, _output_size(*values[-3:], arch=pipe.arch))

    def refresh(event: Dependency) -> Dependency:  # always_last: a refresh asked for while one runs is not lost
        return event.then(refresh_preview, page.preview_inputs, [page.prompt.preview], trigger_mode="always_last",
                          **UI)  # fmt: skip

    ctx = Wiring(pipe, outputs, uploads, limits, refresh)
    _wire_slots(page, ctx)
    _wire_layout(page, ctx)
    wire_inputs(page, demo, limits)
    _wire_generate(page, ctx, jobs, gpu_wrapper)
    _wire_history_and_examples(page, demo, ctx)


def _render(st: UIState, write_prompt: bool = True) -> list:
    """The values of ``Page.slot_outputs`` that show ``st``."""
    filled = sum(s.filled for s in st.slots)
    return [
        st.prompt if write_prompt else gr.update(),  # never overwrite what the user is typing
        error_html(st.error),
        *[gr.update(visible=k < len(st.slots)) for k in range(MAX_SLOTS)],
        *[gr.update(value=st.slots[k].image if k < len(st.slots) else None) for k in range(MAX_SLOTS)],
        *[gr.update(value=list(st.slots[k].tokens) if k < len(st.slots) else []) for k in range(MAX_SLOTS)],
        gr.update(choices=["", *st.names()[: max(filled, len(st.slots))]]),
    ]


def _apply(fn):
    """An event function that applies ``fn(state, *args)`` to the state and shows the new one."""

    def run_fn(st, *args):
        new = fn(st or UIState(), *args)
        return [new, *_render(new)]

    return run_fn


def _wire_slots(page: Page, ctx: Wiring) -> None:
    slots, tables, max_chars = page.slots, page.layout.boxes.tables, ctx.limits.max_prompt_chars

    def on_prompt(st, text):
        st = st or UIState()
        if text == st.prompt:  # the page wrote the box from the state: nothing to read
            return [gr.update()] * (1 + len(page.slot_outputs))
        new = edit_prompt(st, text, max_chars)
        return [new, *_render(new, write_prompt=False)]

    outs = [page.state, *page.slot_outputs]
    prompt = page.prompt.text
    # .change, not .input: Gradio's Textbox sends "input" only for keys that type a character, never for a paste,
    # a cut, Backspace or Delete, while every change of its value sends "change"
    ctx.refresh(prompt.change(on_prompt, [page.state, prompt], outs, trigger_mode="always_last", **UI))
    ctx.refresh(slots.add.click(_apply(add_slot), [page.state], outs, **UI))
    for k in range(MAX_SLOTS):
        ctx.refresh(slots.tokens[k].input(_apply(partial(_tokens, k=k)), [page.state, slots.tokens[k]], outs, **UI))
        upload = _apply(partial(_upload, k=k, folder=ctx.uploads, limits=ctx.limits))
        ctx.refresh(slots.uploads[k].upload(upload, [page.state, slots.uploads[k]], outs, **UI))
        ctx.refresh(slots.images[k].upload(upload, [page.state, slots.images[k]], outs, **UI))
        ctx.refresh(slots.images[k].clear(_apply(partial(_clear, k=k)), [page.state], outs, **UI))
        renumbered = [*outs, *tables]  # removing or moving a reference renumbers the placements that name it
        ctx.refresh(slots.remove[k].click(partial(_remove, k=k), [page.state, *tables], renumbered, **UI))
        ctx.refresh(slots.move_up[k].click(partial(_move_up, k=k), [page.state, *tables], renumbered, **UI))
    ctx.refresh(page.result.send.click(_apply(h.send_to_references), [page.state, page.last_output], outs, **UI))


def _wire_layout(page: Page, ctx: Wiring) -> None:
    layout, settings, error = page.layout, page.settings, page.prompt.error
    for tab, kind in layout.kinds:
        ctx.refresh(tab.select(partial(_constant, kind), None, [page.layout_kind], **UI))
    boxes = layout.boxes
    _wire_boxes(boxes, ctx, corner=page.corner, error=error, routing_inputs=page.preview_inputs)
    fit = partial(_fit_mask_editor, arch=ctx.pipe.arch)  # the mask is drawn at the output's aspect
    for trigger in (*settings.size, boxes.background):
        trigger.change(fit, [boxes.mask_draw, *settings.size, boxes.background], [boxes.mask_draw], **UI)
    for trigger in [*layout.controls, *settings.size]:  # the preview shows the controls the request carries
        ctx.refresh(trigger.change(lambda: None, None, None, **UI))
    settings.preset.change(lambda preset: [gr.update(interactive=preset == "custom")] * 2, [settings.preset],
                           [settings.width, settings.height], **UI)  # fmt: skip


def _wire_boxes(boxes: BoxesTab, ctx: Wiring, *, corner: gr.State, error: gr.HTML, routing_inputs: list) -> None:
    """The boxes tab: clicks on the canvas add boxes, the buttons add 3-D boxes and masks, and every change of the
    tables redraws the canvas and the routing map (drawn from ``routing_inputs``: the page's ``preview_inputs``)."""
    side = CANVAS_SIDE  # boxes are fractions of the picture: the canvas size is only for drawing and clicking
    placements, uploads = boxes.tables, ctx.uploads

    def draw(rows, solid, masks, background=None, corner=None):
        masks = [[str(path), *row[1:]] for row in pl.mask_rows(masks) if (path := stored_mask(row[0], uploads))]
        return canvas_image(pl.box_rows(rows), side, corner, pl.box3d_rows(solid), masks, background)

    def click_box(corner_xy, rows, solid, masks, background, label, ref, evt: gr.SelectData):
        rows = pl.box_rows(rows)
        if corner_xy is None:
            return tuple(evt.index), rows, draw(rows, solid, masks, background, tuple(evt.index))
        rows = [*rows, _box_row(tuple(corner_xy), tuple(evt.index), side, label, ref)]
        return None, rows, draw(rows, solid, masks, background)

    drawn = [*placements, boxes.background]  # what the canvas shows
    boxes.canvas.select(click_box, [corner, *drawn, boxes.label, boxes.ref], [corner, boxes.boxes, boxes.canvas],
                        trigger_mode="multiple", **UI)  # fmt: skip
    boxes.clear.click(lambda bg: (None, [], [], [], canvas_image([], side, background=bg)), [boxes.background],
                      [corner, *placements, boxes.canvas], **UI)  # fmt: skip
    boxes.background.change(draw, drawn, [boxes.canvas], **UI)
    boxes.add_box3d.click(
        lambda solid, label, ref: [*pl.box3d_rows(solid), [*pl.BOX3D_DEFAULT, label or "", ref or ""]],
        [boxes.boxes3d, boxes.label, boxes.ref], [boxes.boxes3d], **UI,
    )  # fmt: skip
    boxes.add_mask.click(partial(_add_mask, folder=uploads), [boxes.mask_draw, boxes.masks, boxes.label, boxes.ref],
                         [boxes.masks, error], **UI)  # fmt: skip
    routing = partial(_routing, arch=ctx.pipe.arch, uploads=uploads)
    for table in placements:
        table.change(draw, drawn, [boxes.canvas], **UI)
        table.change(routing, routing_inputs, [boxes.routing], **UI)


def _wire_generate(page: Page, ctx: Wiring, jobs: Jobs, gpu_wrapper) -> None:
    prompt, result, names, n_layout = page.prompt, page.result, page.settings.names, len(page.layout_inputs)
    pipe, outputs, uploads = ctx.pipe, ctx.outputs, ctx.uploads

    def start():
        return jobs.submit(), gr.update(visible=False), gr.update(visible=True), ""

    def generate(st, text, history, token, *values, progress=gr.Progress()):  # noqa: B008
        settings = dict(zip(names, values[n_layout:], strict=True))
        st = edit_prompt(st or UIState(), text, ctx.limits.max_prompt_chars)  # exactly the text in the box

        def report(done: int, total: int, left: float | None) -> None:
            eta = f" · about {left:.0f} s left" if left is not None else ""
            progress((done, total), desc=f"step {done}/{total}{eta}")

        keep = gr.update()
        try:
            if st.error:
                raise InputError(st.error)
            layout = _layout(values[:n_layout], uploads)
            result = h.generate(pipe, st, layout, settings, outputs, report, jobs=jobs, token=token)
        except Cancelled as exc:
            if not exc.kept:
                return keep, "**Cancelled**: nothing was written", keep, history, keep, keep, ""
            paths = [path for path, _ in exc.kept]  # the finished images stay: shown, listed and in the history
            history = history_with([history_entry(*kept) for kept in exc.kept], history)
            info = f"**Cancelled** after {len(paths)} of {int(settings.get('count') or COUNT)} images: the finished "
            info += f"{'one is' if len(paths) == 1 else 'ones are'} kept ({', '.join(Path(q).name for q in paths)})"
            return paths, info, paths, history, keep, paths[0], ""
        except Exception as exc:  # noqa: BLE001 - every failure is a message on the page
            return keep, "", keep, history, keep, keep, error_html(h.message_of(exc))
        finally:
            jobs.discard(token)  # (a job refused before it reached the queue leaves no token behind)
        entries = [history_entry(path, record) for path, record in zip(result.paths, result.records, strict=True)]
        history = history_with(entries, history)
        return result.paths, result.info, result.paths, history, result.seeds, result.paths[0], ""

    def stop(token):
        was = jobs.cancel(token)
        if was is None:  # the job ended as Stop was clicked: its own message stays
            note = gr.update()
        elif was == "running":  # it stops at its next denoising step; what it finished is kept
            note = "**Cancelling…**"
        else:  # still in the server's queue behind another job: it will never start
            note = "**Cancelled** before it started: nothing was written"
        return note, gr.update(visible=True), gr.update(visible=False)

    gen_fn = gpu_wrapper(generate) if gpu_wrapper is not None else generate
    outs = [result.gallery, result.info, result.download, page.history, page.last_seeds, page.last_output, prompt.error]
    prompt.run.click(start, None, [page.token, prompt.run, prompt.stop, prompt.error], **UI).then(
        gen_fn, [page.state, prompt.text, page.history, page.token, *page.layout_inputs, *page.settings.components],
        outs, concurrency_limit=jobs.concurrency, concurrency_id="gpu", show_progress_on=[result.gallery],
        api_name="page_generate", api_visibility="undocumented",
    ).then(lambda: (gr.update(visible=True), gr.update(visible=False)), None, [prompt.run, prompt.stop],
           **UI).then(None, None, None, js=SCROLL_AFTER_RUN, **UI)  # fmt: skip
    prompt.run.click(None, None, None, js=SCROLL_TO_RESULT, **UI)  # a phone: to the Result, where progress shows
    prompt.stop.click(stop, [page.token], [result.info, prompt.run, prompt.stop], **UI)
    result.reuse.click(lambda seeds: seeds[0] if seeds else gr.update(), [page.last_seeds], [page.settings.seed], **UI)


def _wire_history_and_examples(page: Page, demo: gr.Blocks, ctx: Wiring) -> None:
    from gradio.utils import get_upload_folder

    from sigma_studio.examples import ROOT as EXAMPLES
    from sigma_studio.model.config import GenerationConfig
    from sigma_studio.model.errors import SigmaError
    from sigma_studio.model.request.record import read_record

    layout, gallery = page.layout, page.history_panel.gallery
    side_outputs = [page.state, *page.slot_outputs, layout.tabs, page.layout_kind, layout.canny.image,
                    layout.boxes.boxes, layout.boxes.boxes3d, layout.boxes.masks, layout.boxes.background,
                    *page.settings.components]  # fmt: skip
    # the history is kept by the browser, so it is untrusted: an entry names one of this server's output PNGs by its
    # file name, and everything restored from it is read from that PNG (webui/guard.py)
    shown_files = partial(history_files, outputs=ctx.outputs)

    def show_history(history):
        shown = []
        for path in shown_files(history):
            try:
                shown.append((str(path), caption_of(read_record(path).to_json())))
            except SigmaError:  # a PNG of this folder without a readable record: no entry
                continue
        return shown

    page.history.change(show_history, [page.history], [gallery], **UI)
    page.history_panel.clear.click(lambda: [], None, [page.history], **UI)
    folders = (get_upload_folder(), ctx.outputs, EXAMPLES)  # where a restored reference may come from

    # a restored entry is also the Result again (and what "Send to references" sends), not the last picture made
    result_outputs = [page.result.gallery, page.result.download, page.last_output]

    def restore(history, evt: gr.SelectData):
        shown = shown_files(history)
        unchanged = [gr.update()] * len(result_outputs)
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(shown):
            return [gr.update()] * (len(side_outputs)) + unchanged
        try:
            record = read_record(shown[evt.index]).to_json()
        except SigmaError as exc:
            st = replace(UIState(), error=f"This result cannot be restored: {h.message_of(exc)}")
            return [st, *_render(st), *[gr.update()] * (len(side_outputs) - 1 - len(page.slot_outputs)), *unchanged]
        mask_name = lambda v: p.name if (p := stored_mask(v, ctx.uploads)) else None  # noqa: E731 - its own masks only
        state, values = restore_values(record, GenerationConfig(), partial(within_any, folders=folders), mask_name)
        path = str(shown[evt.index])
        return [state, *_render(state), *values, [path], [path], path]

    ctx.refresh(gallery.select(restore, [page.history], side_outputs + result_outputs, **UI))

    _wire_examples(page, side_outputs, ctx)

    # the page's load event shows the browser's history (the references, the prompt and the error box are built as
    # the first state shows them): on a slow server it can arrive after the user (or a test) has typed, dropped a
    # file or been refused one, and rendering the state it was sent with undid that (a refusal's message vanished)
    ctx.refresh(demo.load(show_history, [page.history], [gallery], api_visibility="undocumented"))


def _wire_examples(page: Page, side_outputs: list, ctx: Wiring) -> None:
    """Each example button fills the prompt, the references, the placement tables and the settings."""
    from sigma_studio.model.config import GenerationConfig

    def load_example(k: int):
        state, values = example_values(page.examples[k], GenerationConfig(), ctx.uploads)
        return [state, *_render(state), *values]

    for k, button in enumerate(page.example_buttons):
        ctx.refresh(button.click(partial(load_example, k), None, side_outputs, **UI))
        button.click(None, None, None, js=SCROLL_TO_PROMPT, **UI)  # back to the prompt (a phone's page)


def _constant(value):
    return value


def _remove(st: UIState, *tables, k: int):
    new = remove_slot(st, k)
    mapping = {k + 1: None} | {n: n - 1 for n in range(k + 2, len(st.slots) + 1)}
    return [new, *_render(new), *pl.remap_placements(tables, mapping)]


def _move_up(st: UIState, *tables, k: int):
    new = move_slot(st, k, -1)
    mapping = {k + 1: k, k: k + 1} if k > 0 else {}
    return [new, *_render(new), *pl.remap_placements(tables, mapping)]


def _tokens(st: UIState, tokens, k: int) -> UIState:
    return set_tokens(st, k, list(tokens or []))


def _upload(st: UIState, path, k: int, folder: Path, limits) -> UIState:
    if not path:
        return st
    usable, message = h.prepare_upload(path, folder, limits)
    if usable is None:
        return replace(st, error=REFUSED + message)
    new = set_image(st, k, usable)
    return replace(new, error=message and f"{NOTE}{message}")


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
    path = store_mask(mask, folder)
    return [*pl.mask_rows(masks), [path.name, label or "", ref or ""]], ""


def _fit_mask_editor(editor, preset, width, height, background, arch):
    from sigma_studio.model.request.structure import ControlSpec, subject_size

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
