"""The page by name: one frozen dataclass per panel, and :class:`Page`, which holds them with the page's states.

webui/blocks.py builds them and webui/events.py wires them. The fields are the Gradio components a panel is made of;
the properties are the lists of components an event reads or fills, in the order their values travel in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr
from gradio.components import Component

from .examples import Example


@dataclass(frozen=True)
class PromptPanel:
    """The prompt with its Generate and Stop buttons, the page's one error box, and the preview of the sequence
    the model receives."""

    text: gr.Textbox
    run: gr.Button
    stop: gr.Button  # shown instead of ``run`` while a generation runs
    error: gr.HTML
    preview: gr.HTML


@dataclass(frozen=True)
class ReferenceSlots:
    """The reference images img1, img2, ...: slot k is ``columns[k]`` (hidden until it is used), holding its image,
    its upload button, its attribute-token menu and its move-up and remove buttons; ``add`` shows one more slot."""

    columns: tuple[gr.Column, ...]
    images: tuple[gr.Image, ...]
    uploads: tuple[gr.UploadButton, ...]
    tokens: tuple[gr.Dropdown, ...]
    move_up: tuple[gr.Button, ...]
    remove: tuple[gr.Button, ...]
    add: gr.Button


@dataclass(frozen=True)
class CannyTab:
    """The Canny layout: the picture whose edges to follow, the edge detector's settings and the edge map."""

    tab: gr.Tab
    image: gr.Image
    low: gr.Slider
    high: gr.Slider
    blur: gr.Slider
    preview: gr.Image

    @property
    def values(self) -> list[Component]:
        """What the edge map is made from: the picture, then the low and high thresholds and the blur."""
        return [self.image, self.low, self.high, self.blur]


@dataclass(frozen=True)
class DepthTab:
    """The depth layout: a picture whose depth is estimated, or a ready depth map, and the depth shown."""

    tab: gr.Tab
    image: gr.Image
    map: gr.Image
    show: gr.Button  # estimates (or reads) the depth into ``preview``
    preview: gr.Image
    note: gr.Markdown  # what the tab needs on this server (webui/depth.py), written when the page loads


@dataclass(frozen=True)
class BoxesTab:
    """Boxes, 3-D boxes and masks: a layout of boxes, or subjects (references) placed there, over an optional
    background. The canvas draws them (two clicks add a box), the routing map shows where each subject goes;
    ``label`` and ``ref`` are what the next box, 3-D box or mask gets."""

    tab: gr.Tab
    canvas: gr.Image
    label: gr.Textbox
    ref: gr.Dropdown
    boxes: gr.Dataframe  # rows x0, y0, x1, y1 (0..1), label, reference
    boxes3d: gr.Dataframe  # rows cx, cy, cz, w, h, d, yaw, label, reference
    add_box3d: gr.Button
    mask_draw: gr.ImageEditor
    add_mask: gr.Button
    masks: gr.Dataframe  # rows: the name of a mask the page saved, label, reference
    clear: gr.Button
    background: gr.Image
    routing: gr.Image
    mask_refused: gr.Textbox  # hidden: a file the mask editor could not decode (webui/inputs.py)

    @property
    def tables(self) -> list[Component]:
        """The placement tables (boxes, 3-D boxes, masks): what the canvas draws, and what names the references."""
        return [self.boxes, self.boxes3d, self.masks]


@dataclass(frozen=True)
class LayoutTabs:
    """The optional layout, one tab per kind; the open tab's control is the request's ``<layout>`` reference."""

    tabs: gr.Tabs
    none: gr.Tab
    canny: CannyTab
    depth: DepthTab
    boxes: BoxesTab

    @property
    def kinds(self) -> list[tuple[gr.Tab, str]]:
        """Each tab with the layout kind that opening it selects."""
        return [(self.none, "none"), (self.canny.tab, "canny"), (self.depth.tab, "depth"), (self.boxes.tab, "boxes")]

    @property
    def controls(self) -> list[Component]:
        """The layout's values but its kind, in the order of :class:`handlers.LayoutInputs`."""
        canny, depth, boxes = self.canny, self.depth, self.boxes
        return [*canny.values, depth.image, depth.map, boxes.boxes, boxes.background, boxes.boxes3d, boxes.masks]


@dataclass(frozen=True)
class Settings:
    """The generation settings. A field's name is the setting's name (what :func:`handlers.settings_config`
    reads), and the fields' order is the order in which webui/restore.py gives their values."""

    preset: gr.Dropdown  # auto | a preset of handlers.SIZE_PRESETS | custom (width and height)
    width: gr.Number
    height: gr.Number
    steps: gr.Slider
    cfg_text: gr.Slider
    cfg_img: gr.Slider
    cfg_low: gr.Slider
    cfg_high: gr.Slider
    renorm: gr.Dropdown
    shift: gr.Slider
    seed: gr.Number
    count: gr.Slider
    group_mask: gr.Checkbox
    speed: gr.Dropdown
    think: gr.Checkbox

    @property
    def names(self) -> list[str]:
        """The settings' names, in order."""
        return [f.name for f in fields(self)]

    @property
    def components(self) -> list[Component]:
        """The settings' components, in the order of :attr:`names`."""
        return [getattr(self, name) for name in self.names]

    @property
    def size(self) -> list[Component]:
        """What the output size is read from (:func:`handlers.size_of`): the preset, the width and the height."""
        return [self.preset, self.width, self.height]


@dataclass(frozen=True)
class ResultPanel:
    """The last generation's images, what it reports, its PNGs as files, and what to do with its images."""

    gallery: gr.Gallery
    info: gr.Markdown
    download: gr.File
    reuse: gr.Button  # puts the first seed used into the seed setting
    send: gr.Button  # puts the first image into a reference slot


@dataclass(frozen=True)
class HistoryPanel:
    """The results this browser keeps (a click restores one's settings), and the button that forgets them."""

    gallery: gr.Gallery
    clear: gr.Button


@dataclass(frozen=True)
class Page:
    """The whole page: its states (values each browser tab keeps, never drawn), its panels and its examples."""

    state: gr.State  # the UIState: the prompt and the reference slots
    token: gr.State  # the Jobs token of the generation that Stop cancels
    layout_kind: gr.State  # the kind of the layout tab last opened
    corner: gr.State  # the first corner clicked for the next box (canvas pixels), or None
    last_seeds: gr.State  # the seeds of the last generation
    last_output: gr.State  # the first image of the last generation
    history: gr.BrowserState  # the browser's history entries (webui/restore.py: history_entry)
    prompt: PromptPanel
    slots: ReferenceSlots
    layout: LayoutTabs
    settings: Settings
    result: ResultPanel
    history_panel: HistoryPanel
    examples: tuple[Example, ...]
    example_buttons: tuple[gr.Button, ...]  # one button per example, in the order of ``examples``

    @property
    def slot_outputs(self) -> list[Component]:
        """What a UIState is shown in: the prompt, the error box, the slots' columns, images and token menus, and
        the menu of references a box may take."""
        prompt, slots = self.prompt, self.slots
        return [prompt.text, prompt.error, *slots.columns, *slots.images, *slots.tokens, self.layout.boxes.ref]

    @property
    def layout_inputs(self) -> list[Component]:
        """The layout's values, in the order of :class:`handlers.LayoutInputs`."""
        return [self.layout_kind, *self.layout.controls]

    @property
    def preview_inputs(self) -> list[Component]:
        """What the preview of the request is made from: the state, the layout's values and the size settings."""
        return [self.state, *self.layout_inputs, *self.settings.size]
