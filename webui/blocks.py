"""``build_demo(pipeline)``: the Gradio Blocks layout. It never loads a model; webui/events.py wires it up."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from sigma_studio.model.config import DEFAULT_SPEED, MIN_STEPS, RENORM_TYPES, SKILLS, SPEEDS, GenerationConfig
from sigma_studio.model.request.control import CANNY_MAX_THRESHOLD
from sigma_studio.model.request.structure import ControlSpec
from sigma_studio.model.request.tokens import ATTRIBUTE_HELP, ATTRIBUTE_TOKENS
from sigma_studio.model.run.think import thinks

from . import handlers as h
from .api import register_api
from .api_params import AUTO_SIZE, COUNT, MAX_COUNT, RANDOM_SEED
from .display import CANVAS_SIDE, canvas_image
from .editor import MaskEditor
from .examples import SHAPES_EXAMPLES, Example, examples_for, thumbnail_files
from .inputs import drop_image
from .jobs import Jobs
from .limits import WebLimits, WebSettings
from .page import (
    BoxesTab,
    CannyTab,
    DepthTab,
    HistoryPanel,
    LayoutTabs,
    Page,
    PromptPanel,
    ReferenceSlots,
    ResultPanel,
    Settings,
)
from .placements import EDITOR_LABEL, EDITOR_SIDE, black_canvas
from .retention import KEEP_HOURS, Retention
from .state import MAX_SLOTS, UIState

NO_TOKENS = "this model was not trained on attribute tokens: it will most likely ignore them"
EXAMPLE_ICONS = ".examples"  # the example buttons' thumbnails, in the outputs folder (served from there)
G, C = GenerationConfig(), ControlSpec()  # every default shown on the page comes from these dataclasses
TOKEN_CHOICES = [(f"{t}  {ATTRIBUTE_HELP[t]}", t) for t in ATTRIBUTE_TOKENS]  # label with help, value the token
HOW_TO = """
Write what to generate, and put each reference image where it belongs with `<img1>`, `<img2>`, ...
Before an image, an **attribute token** says what to take from it:
`Place <id>the man <img1> next to <subject>the dog <img2> in the style of <style>this painting <img3>`.
A token belongs to the first image after it; an image may carry several (`<subject><clothing>the jacket <img1>`).
The token menu under each reference writes the tokens into the prompt for you, and the sequence above shows what
the model will receive.

| token | takes from its image |
|---|---|
""" + "\n".join(f"| `{t}` | {ATTRIBUTE_HELP[t]} |" for t in ATTRIBUTE_TOKENS)
CSS = """
/* WCAG AA contrast (tests/test_webui_axe.py): the theme's subdued grey (neutral-400) is 1.9:1 on white in the
   light scheme, used by hints, info lines, the upload's "or" and Gradio's footer; neutral-500 is 4.8:1.
   The dark scheme keeps its own. */
.gradio-container {--body-text-color-subdued:#71717a; --input-placeholder-color:#71717a;
  --block-info-text-color:var(--body-text-color-subdued)}
.dark .gradio-container, .gradio-container.dark {--body-text-color-subdued:#bbbbc2; --input-placeholder-color:#a1a1aa}
/* the selected tab's label: orange-700 (5.2:1 on white) in the light scheme, the accent (orange-500) in the dark */
.gradio-container {--sigma-tab-selected:#c2410c}
.dark .gradio-container, .gradio-container.dark {--sigma-tab-selected:var(--color-accent)}
.gradio-container button[role=tab][aria-selected=true] {color:var(--sigma-tab-selected)}
/* Generate and Stop: white on orange-700 (5.2:1) and on red-700 (6.5:1), in both schemes */
#generate {--button-primary-background-fill:#c2410c; --button-primary-background-fill-hover:#9a3412;
  --button-primary-border-color:#c2410c; --button-primary-border-color-hover:#9a3412;
  --button-primary-text-color:#ffffff; --button-primary-text-color-hover:#ffffff}
/* an upload's empty state ("Drop Image Here - or - Click to Upload") is grey-500 !important in Gradio's own CSS:
   3.1:1 on the dark scheme's block colour, so the dark scheme lifts it to its subdued text colour */
.dark .gradio-container .empty.wrap, .gradio-container.dark .empty.wrap {color:var(--body-text-color-subdued)!important}
#stop {--button-cancel-background-fill:#b91c1c; --button-cancel-background-fill-hover:#991b1b;
  --button-cancel-text-color:#ffffff; --button-cancel-text-color-hover:#ffffff}
.sigma-preview {display:flex; flex-wrap:wrap; gap:6px; align-items:center; padding:8px; min-height:48px}
.sigma-preview .seg-text {background:var(--background-fill-secondary); padding:4px 8px; border-radius:6px}
.sigma-preview .seg-image {display:inline-flex; gap:4px; align-items:center; border-radius:6px; padding:2px 6px;
  border:1px solid var(--border-color-primary)}
.sigma-preview .seg-image img {height:48px; border-radius:4px}
.sigma-preview.not-ready {color:var(--body-text-color-subdued)}
.sigma-preview mark.tok {background:none; color:inherit; font-weight:600; border-bottom:2px solid var(--color-accent)}
.sigma-preview-notes {margin-top:4px}
.sigma-preview.hint {color:var(--body-text-color-subdued)}
.sigma-error {color:var(--error-text-color); border:1px solid var(--error-border-color); border-radius:6px;
  padding:6px 10px; background:var(--error-background-fill)}
.sigma-note {color:var(--body-text-color); border:1px solid var(--border-color-primary); border-radius:6px;
  padding:6px 10px; background:var(--background-fill-secondary)}
/* the example buttons: the pictures above the whole title, wrapped rather than clipped */
#examples {gap:8px; flex-wrap:wrap}
#examples button.example {flex-direction:column; white-space:normal; height:auto; padding:6px; line-height:1.25}
#examples button.example img {height:48px; width:auto; max-width:100%; margin:0 0 4px 0}
@media (max-width: 640px) {
  /* a phone: Generate (or Stop) is a bar along the bottom of the screen, wherever the page is scrolled */
  #run-row {position:fixed; left:0; right:0; bottom:0; z-index:50; margin:0; padding:8px 16px;
    background:var(--background-fill-primary); border-top:1px solid var(--border-color-primary)}
  .gradio-container {padding-bottom:72px !important}
}
"""


def build_demo(
    pipe,
    *,
    outputs: str | Path = WebSettings.outputs,
    max_concurrency: int = WebSettings.slots,
    gpu_wrapper=None,
    jobs: Jobs | None = None,
    keep_hours: float = KEEP_HOURS,
    limits: WebLimits | None = None,
) -> gr.Blocks:
    """The SIGMA Studio web UI around a loaded pipeline.

    ``gpu_wrapper`` wraps the generate functions (ZeroGPU); ``jobs`` is the generation queue, shared with the REST
    route when the server mounts one; results and uploads older than ``keep_hours`` are deleted (0: never) now, and
    as the generations of every door that shares ``jobs`` start (``jobs`` is given that
    :class:`~webui.retention.Retention` unless it carries its own).
    A ``jobs`` that pools one pipeline per GPU sets the concurrency (``max_concurrency`` is then unused) and each
    generation runs on a free pipeline of the pool; ``pipe`` (one of them) gives the page its architecture.
    """
    from .events import wire

    jobs, limits = jobs or Jobs(max_concurrency), limits or WebLimits()
    outputs = Path(outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    if jobs.retention is None:  # the page's, the API's and the REST calls' generations sweep (a caller's stays)
        jobs.retention = Retention(outputs, keep_hours)
    jobs.retention.sweep(force=True)
    cache = (3600, int(keep_hours * 3600)) if keep_hours > 0 else None
    with gr.Blocks(title="SIGMA Studio", delete_cache=cache) as demo:
        page = _layout(pipe, examples_for(pipe.arch), outputs / EXAMPLE_ICONS)
        wire(page, demo, pipe, outputs=outputs, jobs=jobs, gpu_wrapper=gpu_wrapper, limits=limits)
        register_api(pipe, outputs=outputs, jobs=jobs, gpu_wrapper=gpu_wrapper, limits=limits)  # the named API
    return demo


def _layout(pipe, gallery_examples: tuple[Example, ...], icons: Path) -> Page:
    """The page, top to bottom (its states first: they are not drawn)."""
    state, token, layout_kind, corner = gr.State(UIState()), gr.State(None), gr.State("none"), gr.State(None)
    last_seeds, last_output = gr.State([]), gr.State(None)
    history = gr.BrowserState([], storage_key="sigma-studio-history")
    note = " · random toy weights: images are noise" if pipe.name == "tiny" else ""
    if gallery_examples is SHAPES_EXAMPLES:
        note = " · the shapes world: 64 px pictures of six shapes in eight colours (try the examples above)"
    gr.Markdown(f"# SIGMA Studio\nmodel **{pipe.name}** · mode **{pipe.mode}**{note}")
    example_buttons = _examples(gallery_examples, icons)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", placeholder="Place <id>the man <img1> ...")
            with gr.Row(elem_id="run-row"):
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop")
            error = gr.HTML(elem_id="page-error")
            slots = _slots(pipe.arch.skills)
            gr.Markdown("**Sequence the model receives**")
            preview = gr.HTML(elem_id="preview")
            with gr.Accordion("How to write a SIGMA prompt", open=False, elem_id="how-to"):
                gr.Markdown(HOW_TO)
            layout = _layout_tabs(pipe.arch.skills)
            settings = _settings(pipe)
        with gr.Column(scale=2):
            result, history_panel = _results()
    return Page(
        state=state, token=token, layout_kind=layout_kind, corner=corner, last_seeds=last_seeds,
        last_output=last_output, history=history, prompt=PromptPanel(text, run, stop, error, preview), slots=slots,
        layout=layout, settings=settings, result=result, history_panel=history_panel, examples=gallery_examples,
        example_buttons=example_buttons,
    )  # fmt: skip


def _examples(examples: tuple[Example, ...], icons: Path) -> tuple[gr.Button, ...]:
    """The examples, at the top where a first visit sees them: one button each, its pictures and its whole title
    (a button is announced by its title; a gallery announced "Thumbnail 1 of 5" and clipped the titles)."""
    gr.Markdown("## Examples\nClick one to fill the prompt, the references, the layout and the settings.",
                elem_id="examples-title")  # fmt: skip
    with gr.Row(elem_id="examples"):
        return tuple(
            gr.Button(ex.title, icon=icon, size="sm", min_width=120, elem_classes=["example"])
            for ex, icon in zip(examples, thumbnail_files(examples, icons), strict=True)
        )


def _results() -> tuple[ResultPanel, HistoryPanel]:
    """The right-hand column: the result, then the history."""
    gallery = gr.Gallery(label="Result", columns=2, height=420, elem_id="output", format="png")
    info = gr.Markdown(elem_id="info")
    download = gr.File(label="PNGs with their records", file_count="multiple", elem_id="download")
    with gr.Row():
        reuse = gr.Button("Reuse seed", size="sm", elem_id="reuse-seed")
        send = gr.Button("Send to references", size="sm", elem_id="send")
    history = gr.Gallery(
        label="History (this browser): click one to restore its settings", columns=4, height=200,
        object_fit="contain", allow_preview=False, elem_id="history",
    )  # fmt: skip
    clear = gr.Button("Clear history", size="sm", elem_id="clear-history")
    return ResultPanel(gallery, info, download, reuse, send), HistoryPanel(history, clear)


def _slots(skills: tuple[str, ...] | None = None) -> ReferenceSlots:
    """The reference slots in a row, and the button that shows one more."""
    with gr.Row():
        made = [_slot(k, untrained(skills, "attribute_tokens")) for k in range(MAX_SLOTS)]
    add = gr.Button("+ reference image", size="sm", elem_id="add-slot")
    columns, images, uploads, tokens, move_up, remove = (tuple(group) for group in zip(*made, strict=True))
    return ReferenceSlots(columns, images, uploads, tokens, move_up, remove, add)


def _slot(k: int, no_tokens: bool = False) -> tuple[gr.Column, gr.Image, gr.UploadButton, gr.Dropdown, gr.Button,
                                                     gr.Button]:  # fmt: skip
    """Slot k's column (visible from the start only for img1) and its parts, in the order of ReferenceSlots;
    ``no_tokens``: the model was not trained on attribute tokens, which the token menu then says."""
    with gr.Column(visible=k == 0, min_width=160, elem_id=f"slot-{k}") as column:
        image = drop_image(  # a drop target; the upload button below does the same
            label=f"img{k + 1}", sources=["upload"], height=150, elem_id=f"slot-image-{k}"
        )
        # no file_types: Gradio would refuse another file in a pop-up of its own; the page refuses it in its box
        upload = gr.UploadButton(f"Upload img{k + 1}", size="sm", elem_id=f"slot-upload-{k}")
        tokens = gr.Dropdown(
            TOKEN_CHOICES, multiselect=True, label=f"what to take from img{k + 1}", elem_id=f"slot-tokens-{k}",
            info=NO_TOKENS if no_tokens else None,
        )  # fmt: skip
        with gr.Row():
            move_up = gr.Button("↑ move up", size="sm", visible=k > 0, elem_id=f"slot-up-{k}")  # img1 is first
            remove = gr.Button("✕ remove", size="sm", elem_id=f"slot-remove-{k}")
    return column, image, upload, tokens, move_up, remove


def _layout_tabs(skills: tuple[str, ...] | None = None) -> LayoutTabs:
    """The layout tabs, "No layout" open; a tab whose control the model was not trained to read says so."""
    gr.Markdown("**Layout** (optional): the open tab adds its control image as a `<layout>` reference")
    with gr.Tabs(selected="none", elem_id="layout-tabs") as tabs:
        with gr.Tab("No layout", id="none") as none:
            gr.Markdown("Pick a tab to add a Canny edge map, a depth map or boxes.")
        canny = _canny_tab(skills)
        depth = _depth_tab(skills)
        boxes = _boxes_tab(skills)
    return LayoutTabs(tabs, none, canny, depth, boxes)


def untrained(skills: tuple[str, ...] | None, *needed: str) -> list[str]:
    """The skills among ``needed`` the loaded model lacks, in the page's words (no CLI options); none when the
    model's skills are not known."""
    return [re.sub(r"\s*\(--[^)]*\)", "", SKILLS[s]) for s in needed if skills is not None and s not in skills]


def _tab_label(name: str, skills: tuple[str, ...] | None, *needed: str) -> str:
    """A layout tab's label, marked when the model can read none of what the tab offers."""
    return f"{name} · not trained" if len(untrained(skills, *needed)) == len(needed) and skills is not None else name


def _untrained_note(skills: tuple[str, ...] | None, *needed: str) -> None:
    """A note at the top of a tab for each skill it offers that the loaded model lacks (none when not known)."""
    missing = untrained(skills, *needed)
    if missing:
        gr.HTML(f'<div class="sigma-note" role="note">ℹ This model was not trained to read {" or ".join(missing)}: '
                "it will most likely ignore them.</div>", elem_classes=["untrained"])  # fmt: skip


def _canny_tab(skills: tuple[str, ...] | None) -> CannyTab:
    with gr.Tab(_tab_label("Canny", skills, "canny"), id="canny") as tab:
        _untrained_note(skills, "canny")
        image = drop_image(label="image whose edges to follow", height=200, elem_id="canny")
        with gr.Row():
            low = gr.Slider(0, 500, C.canny_low, step=1, label="low threshold",
                            info="edges weaker than this are dropped")  # fmt: skip
            high = gr.Slider(1, CANNY_MAX_THRESHOLD, C.canny_high, step=1, label="high threshold",
                             info="edges stronger than this are always kept")  # fmt: skip
            blur = gr.Slider(0, 9, C.canny_blur, step=1, label="blur",
                             info="odd kernel size, 0 = none: fewer, smoother edges")  # fmt: skip
        preview = gr.Image(label="edge map", interactive=False, height=200, elem_id="canny-preview")
    return CannyTab(tab, image, low, high, blur, preview)


def _depth_tab(skills: tuple[str, ...] | None) -> DepthTab:
    with gr.Tab(_tab_label("Depth", skills, "depth"), id="depth") as tab:
        _untrained_note(skills, "depth")
        with gr.Row():
            image = drop_image(label="image (its depth is estimated)", height=200, elem_id="depth-image")
            depth_map = drop_image(label="or a ready depth map", height=200, elem_id="depth-map")
        note = gr.Markdown(elem_id="depth-note")  # written when the page loads (webui/depth.py)
        show = gr.Button("Estimate / show depth", size="sm")
        preview = gr.Image(label="depth", interactive=False, height=200)
    return DepthTab(tab, image, depth_map, show, preview, note)


def _boxes_tab(skills: tuple[str, ...] | None) -> BoxesTab:
    with gr.Tab(_tab_label("Boxes", skills, "boxes", "subjects"), id="boxes") as tab:
        _untrained_note(skills, "boxes", "subjects")
        gr.Markdown("Click two corners on the canvas to add a box. Give it a reference to place that image there "
                    "as a subject (SIGMA-GEN); boxes without references are drawn as a layout.")  # fmt: skip
        canvas = gr.Image(value=canvas_image([], CANVAS_SIDE), label="canvas", interactive=False, height=300,
                          elem_id="canvas", alt_text="canvas of the boxes: click two corners to add one")  # fmt: skip
        with gr.Row():
            label = gr.Textbox(label="label of the next box", value="", elem_id="box-label")
            ref = gr.Dropdown(["", *UIState().names()], value="",  # the references of the page's first state
                              label="reference of the next box", elem_id="box-ref")  # fmt: skip
        boxes = gr.Dataframe(
            headers=["x0", "y0", "x1", "y1", "label", "reference"],
            datatype=["number", "number", "number", "number", "str", "str"],
            value=[], interactive=True, label="boxes (0..1 of the picture)", type="array", elem_id="boxes",
        )  # fmt: skip
        gr.Markdown(
            "**3-D boxes and masks** place references as subjects too (each takes the label and reference above). "
            "A 3-D box is in camera metres (x right, y down, z forward; a 60° camera) and turned by yaw degrees; "
            "the canvas draws its wireframe. A mask is drawn in the editor or uploaded."
        )
        boxes3d = gr.Dataframe(
            headers=["cx", "cy", "cz", "w", "h", "d", "yaw°", "label", "reference"],
            datatype=["number"] * 7 + ["str", "str"], value=[], interactive=True, label="3-D boxes",
            type="array", elem_id="boxes3d",
        )  # fmt: skip
        add_box3d = gr.Button("+ 3-D box", size="sm", elem_id="add-box3d")
        mask_draw = MaskEditor(value=black_canvas(), type="numpy", canvas_size=(EDITOR_SIDE,) * 2, height=300,
                                   label=EDITOR_LABEL, elem_id="mask-draw",
                                   layers=gr.LayerOptions(allow_additional_layers=False),
                                   brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))  # fmt: skip
        add_mask = gr.Button("+ mask subject", size="sm", elem_id="add-mask")
        masks = gr.Dataframe(headers=["mask file", "label", "reference"], datatype=["str"] * 3, value=[],
                             interactive=True, label="masks", type="array", elem_id="masks")  # fmt: skip
        clear = gr.Button("Clear boxes", size="sm")
        background = drop_image(label="background to insert the subjects into (optional)", height=160,
                                elem_id="background")  # fmt: skip
        routing = gr.Image(label="routing map (subjects) / box layout", interactive=False, height=200,
                           elem_id="routing")  # fmt: skip
        refused = gr.Textbox(visible="hidden", elem_id="mask-refused")
    return BoxesTab(tab, canvas, label, ref, boxes, boxes3d, add_box3d, mask_draw, add_mask, masks, clear, background,
                    routing, refused)  # fmt: skip


def _settings(pipe) -> Settings:
    side = pipe.arch.max_image_size
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        with gr.Row():
            preset = gr.Dropdown([AUTO_SIZE, *h.SIZE_PRESETS, "custom"], value=AUTO_SIZE, label="size",
                                 info="auto: the last reference's size", elem_id="preset")  # fmt: skip
            width = gr.Number(side, label="width", precision=0, minimum=16, maximum=side, step=16, interactive=False)
            height = gr.Number(side, label="height", precision=0, minimum=16, maximum=side, step=16,
                               interactive=False)  # fmt: skip
        with gr.Row():
            steps = gr.Slider(MIN_STEPS, 100, G.steps, step=1, label="steps", elem_id="steps",
                              info="more steps: finer detail, slower")  # fmt: skip
            cfg_text = gr.Slider(1, 10, G.cfg_text_scale, step=0.1, label="text guidance",
                                 info="how strongly to follow the prompt")  # fmt: skip
            cfg_img = gr.Slider(1, 5, G.cfg_img_scale, step=0.1, label="image guidance",
                                info="how strongly to follow the references")  # fmt: skip
        with gr.Row():
            cfg_low = gr.Slider(0, 1, G.cfg_interval[0], step=0.05, label="guidance from t >",
                                info="guidance applies only while the noise level t is in (from, to]")  # fmt: skip
            cfg_high = gr.Slider(0, 1, G.cfg_interval[1], step=0.05, label="guidance to t <=")
            renorm = gr.Dropdown(list(RENORM_TYPES), value=G.cfg_renorm_type, label="renorm",
                                 info="keeps guided updates from overshooting")  # fmt: skip
            shift = gr.Slider(1, 6, G.timestep_shift, step=0.1, label="timestep shift",
                              info="higher: more steps at high noise (layout), lower: more on detail")  # fmt: skip
        with gr.Row():
            seed = gr.Number(RANDOM_SEED, label=f"seed ({RANDOM_SEED} = random)", precision=0, elem_id="seed",
                             info="the seed used is shown with the result; Reuse seed puts it here")  # fmt: skip
            count = gr.Slider(1, MAX_COUNT, COUNT, step=1, label="images per run", elem_id="count",
                              info="one per seed: seed, seed+1, ...")  # fmt: skip
            group_mask = gr.Checkbox(pipe.arch.group_mask, label="group-scoped attention mask",
                                     info="each reference's tokens read only their own image (SIGMA)")  # fmt: skip
            speed = gr.Dropdown(list(SPEEDS), value=DEFAULT_SPEED, label="speed", elem_id="speed",
                                info=f"fast: guidance evaluated every {SPEEDS['fast']} steps")  # fmt: skip
            think = gr.Checkbox(thinks(None, pipe.arch), label="write a plan first", elem_id="think",
                                info="the model writes what it will draw, then draws it (think mode)")  # fmt: skip
            gr.Textbox(pipe.mode, label="model mode (set at launch)", interactive=False)
    return Settings(preset, width, height, steps, cfg_text, cfg_img, cfg_low, cfg_high, renorm, shift, seed, count,
                    group_mask, speed, think)  # fmt: skip
