"""``build_demo(pipeline)``: the Gradio Blocks layout and its wiring. It never loads a model."""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import gradio as gr

from sigma_studio.model.config import RENORM_TYPES, GenerationConfig
from sigma_studio.model.structure import ControlSpec
from sigma_studio.model.tokens import ATTRIBUTE_HELP, ATTRIBUTE_TOKENS

from . import handlers as h
from .examples import SHAPES_EXAMPLES, examples_for
from .state import MAX_SLOTS, Slot, UIState, add_slot, move_slot, read_prompt, remove_slot, set_image, set_tokens

CSS = """
.sigma-preview {display:flex; flex-wrap:wrap; gap:6px; align-items:center; padding:8px; min-height:48px}
.sigma-preview .seg-text {background:var(--background-fill-secondary); padding:4px 8px; border-radius:6px}
.sigma-preview .seg-image {display:inline-flex; gap:4px; align-items:center; border-radius:6px; padding:2px 6px;
  border:1px solid var(--border-color-primary)}
.sigma-preview .seg-image img {height:48px; border-radius:4px}
.sigma-preview.error {color:var(--error-text-color)}
"""
G, C = GenerationConfig(), ControlSpec()  # every default shown on the page comes from these dataclasses
TOKEN_INFO = "; ".join(f"{t} {d}" for t, d in list(ATTRIBUTE_HELP.items())[:5]) + "; …"


def build_demo(pipe, *, outputs: str | Path = "outputs/webui", max_concurrency: int = 1, gpu_wrapper=None) -> gr.Blocks:
    """The SIGMA Studio web UI around a loaded pipeline. ``gpu_wrapper`` wraps the generate function (ZeroGPU)."""
    outputs = Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    max_size = pipe.arch.max_image_size
    gallery_examples = examples_for(pipe.arch)
    with gr.Blocks(title="SIGMA Studio") as demo:
        state = gr.State(UIState())
        history = gr.State([])
        last_output = gr.State(None)
        note = " · random toy weights: images are noise" if pipe.name == "tiny" else ""
        if gallery_examples is SHAPES_EXAMPLES:
            note = " · the shapes world: 64 px pictures of six shapes in eight colours (try the examples below)"
        gr.Markdown(f"## SIGMA Studio\nmodel **{pipe.name}** · mode **{pipe.mode}**{note}")
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(
                    label="Prompt", lines=3, elem_id="prompt", placeholder="Place <id>the man <img1> ..."
                )
                error = gr.Markdown(elem_id="prompt-error")
                slot_cols, slot_imgs, slot_uploads, slot_tokens, slot_up, slot_rm = [], [], [], [], [], []
                with gr.Row():
                    for k in range(MAX_SLOTS):
                        with gr.Column(visible=k == 0, min_width=150, elem_id=f"slot-{k}") as col:
                            img = gr.Image(
                                label=f"img{k + 1}", interactive=False, height=150, elem_id=f"slot-image-{k}"
                            )
                            upl = gr.UploadButton(f"Upload img{k + 1}", file_types=["image"], size="sm",
                                                  elem_id=f"slot-upload-{k}")  # fmt: skip
                            tok = gr.Dropdown(
                                ATTRIBUTE_TOKENS, multiselect=True, label="attribute tokens",
                                info=TOKEN_INFO if k == 0 else None, elem_id=f"slot-tokens-{k}",
                            )  # fmt: skip
                            with gr.Row():
                                up = gr.Button("↑", size="sm", elem_id=f"slot-up-{k}")
                                rm = gr.Button("✕", size="sm", elem_id=f"slot-remove-{k}")
                        slot_cols.append(col)
                        slot_imgs.append(img)
                        slot_uploads.append(upl)
                        slot_tokens.append(tok)
                        slot_up.append(up)
                        slot_rm.append(rm)
                add = gr.Button("+ reference image", size="sm", elem_id="add-slot")
                gr.Markdown("**Sequence the model receives**")
                preview = gr.HTML(elem_id="preview")
                layout_kind = gr.Radio(
                    list(h.LAYOUT_KINDS), value="none", label="layout input (follows the tab)",
                    elem_id="layout-kind",
                )  # fmt: skip
                with gr.Tabs():
                    with gr.Tab("No layout") as tab_none:
                        gr.Markdown(
                            "Pick a tab to add a Canny edge map, a depth map or boxes as a `<layout>` reference."
                        )
                    with gr.Tab("Canny") as tab_canny:
                        canny_src = gr.Image(type="filepath", label="image", height=200)
                        with gr.Row():
                            canny_low = gr.Slider(0, 500, C.canny_low, step=1, label="low threshold")
                            canny_high = gr.Slider(1, 1000, C.canny_high, step=1, label="high threshold")
                            canny_blur = gr.Slider(0, 9, C.canny_blur, step=1, label="blur (odd, 0 = none)")
                        canny_prev = gr.Image(label="edge map", interactive=False, height=200)
                    with gr.Tab("Depth") as tab_depth:
                        with gr.Row():
                            depth_src = gr.Image(type="filepath", label="image (depth is estimated)", height=200)
                            depth_map = gr.Image(type="filepath", label="or a ready depth map", height=200)
                        depth_btn = gr.Button("Estimate / show depth", size="sm")
                        depth_prev = gr.Image(label="depth", interactive=False, height=200)
                    with gr.Tab("Boxes") as tab_boxes:
                        gr.Markdown(
                            "Click two corners on the canvas to add a box; "
                            "assign it to a reference to place that subject."
                        )
                        canvas = gr.Image(value=_canvas(max_size), label="canvas", interactive=False, height=260)
                        with gr.Row():
                            box_label = gr.Textbox(label="label of the next box", value="")
                            box_ref = gr.Dropdown(
                                ["", *[f"img{k + 1}" for k in range(MAX_SLOTS)]], value="", label="reference"
                            )
                        boxes = gr.Dataframe(
                            headers=["x0", "y0", "x1", "y1", "label", "reference"],
                            datatype=["number", "number", "number", "number", "str", "str"],
                            value=[], interactive=True, label="boxes (0..1)", type="array",
                        )  # fmt: skip
                        corner = gr.State(None)
                        clear_boxes = gr.Button("Clear boxes", size="sm")
                        routing = gr.Image(label="routing map / box layout", interactive=False, height=200)
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    with gr.Row():
                        preset = gr.Dropdown(["auto", *h.SIZE_PRESETS, "custom"], value="auto", label="size")
                        width = gr.Number(max_size, label="width", precision=0, minimum=16, maximum=max_size, step=16)
                        height = gr.Number(max_size, label="height", precision=0, minimum=16, maximum=max_size, step=16)
                    with gr.Row():
                        steps = gr.Slider(2, 100, G.steps, step=1, label="steps", elem_id="steps")
                        cfg_text = gr.Slider(1, 10, G.cfg_text_scale, step=0.1, label="text guidance")
                        cfg_img = gr.Slider(1, 5, G.cfg_img_scale, step=0.1, label="image guidance")
                    with gr.Row():
                        cfg_low = gr.Slider(0, 1, G.cfg_interval[0], step=0.05, label="guidance from t >")
                        cfg_high = gr.Slider(0, 1, G.cfg_interval[1], step=0.05, label="guidance to t <=")
                        renorm = gr.Dropdown(list(RENORM_TYPES), value=G.cfg_renorm_type, label="renorm")
                        shift = gr.Slider(1, 6, G.timestep_shift, step=0.1, label="timestep shift")
                    with gr.Row():
                        seed = gr.Number(-1, label="seed (-1 = random)", precision=0, elem_id="seed")
                        randomize = gr.Checkbox(False, label="randomize seed")
                        group_mask = gr.Checkbox(pipe.arch.group_mask, label="group-scoped attention mask")
                        gr.Textbox(pipe.mode, label="model mode (set at launch)", interactive=False)
            with gr.Column(scale=2):
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", elem_id="cancel")
                output = gr.Image(label="Result", interactive=False, format="png", elem_id="output", height=420)
                info = gr.Markdown(elem_id="info")
                download = gr.File(label="PNG with its settings", interactive=False, elem_id="download")
                send = gr.Button("Send to references", size="sm", elem_id="send")
                gallery = gr.Gallery(label="This session", columns=4, height=200, elem_id="history")
        gr.Markdown("### Examples")
        examples = gr.Gallery(
            value=[(ex.paths()[0], ex.title) for ex in gallery_examples], columns=len(gallery_examples), height=180,
            allow_preview=False, label="click one to fill every field", elem_id="examples",
        )  # fmt: skip

        slot_outputs = [prompt, error, preview, *slot_cols, *slot_imgs, *slot_tokens, box_ref]
        layout_inputs = [layout_kind, canny_src, canny_low, canny_high, canny_blur, depth_src, depth_map, boxes]

        def render(st: UIState, write_prompt: bool = True):
            filled = sum(s.filled for s in st.slots)
            return [
                st.prompt if write_prompt else gr.update(),  # never overwrite what the user is typing
                f"⚠ {st.error}" if st.error else "",
                h.preview_html(st, None, pipe.arch),  # then refresh_preview adds the layout controls
                *[gr.update(visible=k < len(st.slots)) for k in range(MAX_SLOTS)],
                *[gr.update(value=st.slots[k].image if k < len(st.slots) else None) for k in range(MAX_SLOTS)],
                *[gr.update(value=list(st.slots[k].tokens) if k < len(st.slots) else []) for k in range(MAX_SLOTS)],
                gr.update(choices=["", *st.names()[: max(filled, len(st.slots))]], value=""),
            ]

        def apply(fn):
            def run_fn(st, *args):
                new = fn(st, *args)
                return [new, *render(new)]

            return run_fn

        def on_prompt(st, text):
            new = read_prompt(st, text)
            return [new, *render(new, write_prompt=False)]

        prompt.input(on_prompt, [state, prompt], [state, *slot_outputs], trigger_mode="always_last")
        add.click(apply(add_slot), [state], [state, *slot_outputs])
        for k in range(MAX_SLOTS):
            slot_tokens[k].input(apply(partial(_tokens, k=k)), [state, slot_tokens[k]], [state, *slot_outputs])
            # uploads go through a button so that our validation, not the image widget's decoder, sees bad files
            slot_uploads[k].upload(apply(partial(_upload, k=k)), [state, slot_uploads[k]], [state, *slot_outputs])
            slot_rm[k].click(partial(_remove, k=k, render=render), [state, boxes], [state, *slot_outputs, boxes])
            slot_up[k].click(partial(_move_up, k=k, render=render), [state, boxes], [state, *slot_outputs, boxes])
        for tab, kind in ((tab_none, "none"), (tab_canny, "canny"), (tab_depth, "depth"), (tab_boxes, "boxes")):
            tab.select(lambda kind=kind: kind, None, [layout_kind])

        for widget in (canny_src, canny_low, canny_high, canny_blur):
            widget.change(_canny_preview, [canny_src, canny_low, canny_high, canny_blur], [canny_prev])
        depth_btn.click(h.depth_preview, [depth_src, depth_map], [depth_prev])

        def click_box(corner_xy, rows, label, ref, evt: gr.SelectData):
            if corner_xy is None:
                return tuple(evt.index), rows
            return None, [*h.box_rows(rows), _box_row(tuple(corner_xy), tuple(evt.index), max_size, label, ref)]

        canvas.select(click_box, [corner, boxes, box_label, box_ref], [corner, boxes])
        clear_boxes.click(lambda: (None, []), None, [corner, boxes])
        boxes.change(partial(_routing, arch=pipe.arch), [state, *layout_inputs], [routing])

        def refresh_preview(st, *values):
            return h.preview_html(st, h.LayoutInputs(*values), pipe.arch)

        for widget in layout_inputs:  # the preview shows the control images the request will carry
            widget.change(refresh_preview, [state, *layout_inputs], [preview])
        state.change(refresh_preview, [state, *layout_inputs], [preview])

        settings = [
            preset,
            width,
            height,
            steps,
            cfg_text,
            cfg_img,
            cfg_low,
            cfg_high,
            renorm,
            shift,
            seed,
            randomize,
            group_mask,
        ]

        cancel_flags: dict[str, threading.Event] = {}  # per browser session, so Cancel stops only its own run

        def generate(st, history_list, request: gr.Request, *values, progress=gr.Progress()):  # noqa: B008
            flag = cancel_flags.setdefault(request.session_hash or "", threading.Event())
            flag.clear()
            layout = h.LayoutInputs(*values[: len(layout_inputs)])
            names = ["preset", "width", "height", "steps", "cfg_text", "cfg_img", "cfg_low", "cfg_high", "renorm",
                     "shift", "seed", "randomize", "group_mask"]  # fmt: skip
            cfg = dict(zip(names, values[len(layout_inputs) :], strict=True))
            try:
                path, text, _seed = h.generate(pipe, st, layout, cfg, outputs, progress, cancel=flag)
            except h.Cancelled:
                gr.Info("Cancelled")
                return gr.update(), "cancelled", gr.update(), history_list, history_list, gr.update()
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message in the page
                raise h.friendly(exc) from None
            history_list = [*history_list, path]
            return path, text, path, history_list, history_list, path

        def cancel_run(request: gr.Request):
            cancel_flags.setdefault(request.session_hash or "", threading.Event()).set()

        gen_fn = gpu_wrapper(generate) if gpu_wrapper is not None else generate
        event = run.click(
            gen_fn,
            [state, history, *layout_inputs, *settings],
            [output, info, download, gallery, history, last_output],
            concurrency_limit=max_concurrency, concurrency_id="gpu",
        )  # fmt: skip
        cancel.click(cancel_run, None, None, cancels=[event])  # stops a queued run, and a running one at its next step
        send.click(apply(h.send_to_references), [state, last_output], [state, *slot_outputs])

        def load_example(evt: gr.SelectData):
            return _load_example(gallery_examples[evt.index], render)

        examples.select(load_example, None, [state, *slot_outputs, layout_kind, canny_src, boxes])
        demo.load(lambda st: [st, *render(st)], [state], [state, *slot_outputs])
    return demo


def _remove(st: UIState, rows, k: int, render):
    new = remove_slot(st, k)
    mapping = {k + 1: None} | {n: n - 1 for n in range(k + 2, len(st.slots) + 1)}
    return [new, *render(new), h.remap_box_refs(rows, mapping)]


def _move_up(st: UIState, rows, k: int, render):
    new = move_slot(st, k, -1)
    mapping = {k + 1: k, k: k + 1} if k > 0 else {}
    return [new, *render(new), h.remap_box_refs(rows, mapping)]


def _tokens(st: UIState, tokens, k: int) -> UIState:
    return set_tokens(st, k, list(tokens or []))


def _upload(st: UIState, path, k: int) -> UIState:
    problem = h.upload_problem(path) if path else None
    if problem:
        gr.Warning(problem)  # non-fatal: the page keeps every other field as it was
        return replace(st, error=problem)
    return set_image(st, k, path)


def _canvas(size: int):
    from PIL import Image

    return Image.new("RGB", (size, size), (235, 235, 235))


def _box_row(corner: tuple[int, int], point: tuple[int, int], side: int, label: str, ref: str) -> list:
    """Two clicked corners (canvas pixels) -> a table row in fractions of the image."""
    (x0, y0), (x1, y1) = corner, point
    frac = [round(v / side, 4) for v in (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))]
    return [*frac, label or "", ref or ""]


def _routing(st, *values, arch):
    layout = h.LayoutInputs(*values)
    return h.routing_preview(replace(layout, kind="boxes"), st, None, arch)


def _canny_preview(path, low, high, blur):
    from sigma_studio.model.control import canny_edges
    from sigma_studio.model.images import open_image, to_rgb

    if not path:
        return None
    try:
        return canny_edges(to_rgb(open_image(path)), int(low), int(high), int(blur))
    except Exception as exc:  # noqa: BLE001
        raise h.friendly(exc) from None


def _load_example(ex, render):
    st = UIState("", tuple(Slot() for _ in ex.images))
    for k, path in enumerate(ex.paths()):
        st = set_image(st, k, path)
    st = read_prompt(st, ex.prompt)
    layout_image = str(Path(ex.paths()[0]).parent / ex.layout_image) if ex.layout_image else None
    rows = [list(b) for b in ex.boxes]
    return [st, *render(st), ex.layout, layout_image, rows]
