"""The page's picture inputs: whatever file a user drops or chooses, every input behaves like a slot's Upload
button, so a file that is no picture gets one "Upload refused" message and fails no event.

Gradio opens a ``gr.Image``'s file before the event runs, and a file it cannot open fails every event that reads
the input (red "Error" badges over all their outputs, a ComponentProcessingError in the server log): a
:data:`DropImage` hands such a file to the event instead, which refuses it in the page's words. The mask editor
decodes a file in the browser and silently keeps its old picture when it cannot: a watcher in the page reports the
file to the server, which says so in the same words. The depth tab's note and the Canny and depth previews are
here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from . import depth
from . import handlers as h
from .display import error_html

if TYPE_CHECKING:
    from .limits import WebLimits
    from .page import Page

UI = dict(api_visibility="undocumented", queue=False)  # lightweight page events (webui/events.py)
REFUSED = "Upload refused: "  # how a refused upload's message starts (handlers.upload_problem)
# installed once when the page loads: a file dropped or chosen in the mask editor that the browser cannot decode
# is written into the hidden #mask-refused box (a counter first, so the same file twice is two changes)
WATCH_MASK_EDITOR = """() => {
  if (window.sigmaWatchesMasks) return;
  window.sigmaWatchesMasks = true;
  let count = 0;
  const inEditor = el => el instanceof Element && el.closest('#mask-draw') !== null;
  const report = name => {
    const box = document.querySelector('#mask-refused textarea');
    if (!box) return;
    box.value = `${++count}:${name}`;
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const check = files => {
    for (const file of files || []) {
      const url = URL.createObjectURL(file), img = new Image();
      img.src = url;
      img.decode().catch(() => report(file.name)).finally(() => URL.revokeObjectURL(url));
    }
  };
  const dropped = e => { if (inEditor(e.target)) check(e.dataTransfer && e.dataTransfer.files); };
  const chosen = e => { if (inEditor(e.target) && e.target.type === 'file') check(e.target.files); };
  document.addEventListener('drop', dropped, true);
  document.addEventListener('change', chosen, true);
}"""
SCROLL_TO_PROMPT = "() => { document.querySelector('#prompt')?.scrollIntoView({block: 'start'}); }"
# On a phone the columns stack and the Result is far below Generate: tapping Generate scrolls to the Result (its
# progress, then the picture); a refusal, shown under the prompt, brings the page back to it.
PHONE = "window.matchMedia('(max-width: 640px)').matches"
SCROLL_TO_RESULT = f"() => {{ if ({PHONE}) document.querySelector('#output')?.scrollIntoView({{block: 'start'}}); }}"
# When the run ends: the Result again (a page that grew while it ran may have pushed it down), or the refusal's
# message if there is one (the error box may be drawn a few frames after the event ends: watched for about 1 s)
SCROLL_AFTER_RUN = (
    f"() => {{ if (!({PHONE})) return; "
    f"document.querySelector('#output')?.scrollIntoView({{block: 'start'}}); const look = (n) => {{ "
    f"const e = document.querySelector('#page-error .sigma-error'); "
    f"if (e) e.scrollIntoView({{block: 'center'}}); else if (n > 0) requestAnimationFrame(() => look(n - 1)); }}; "
    f"look(60); }}"
)


def _preprocess(self, payload):
    """gr.Image's preprocess, but a file it cannot open as a picture is passed on as its path (one in Gradio's
    upload folder: Gradio checks that before preprocessing), for the event to refuse."""
    try:
        return gr.Image.preprocess(self, payload)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        if self.type != "filepath" or payload is None or payload.path is None:
            raise
        return str(payload.path)


# A ``gr.Image`` whose file, when Gradio cannot open it as a picture, still reaches the event as its path: the event
# refuses it in the page's words (handlers.prepare_upload, handlers.upload_problem) instead of failing before it
# runs. It is a class (not a wrapped instance), as Gradio rebuilds a component from its class after an update; and
# it is made without the hook of Gradio's component metaclass, which writes a ``.pyi`` stub next to the module that
# defines a component (ABCMeta, the metaclass's own base, makes it). ``is_template``: drawn as the "image" it is.
_META = type(gr.Image)
DropImage = super(_META, _META).__new__(
    _META, "DropImage", (gr.Image,),
    {"__module__": __name__, "__qualname__": "DropImage", "is_template": True, "preprocess": _preprocess},
)  # fmt: skip


def drop_image(**options) -> gr.Image:
    """A drop area for a picture, passed to events as its file's path (:data:`DropImage`)."""
    return DropImage(type="filepath", image_mode=None, **options)


def wire_inputs(page: Page, demo: gr.Blocks, limits: WebLimits) -> None:
    """The layout's picture inputs refuse a file that is no picture (clearing it, with the message in the page's
    error box); the mask editor's refusals come through its watcher; the depth tab's note is read on each load;
    the Canny edge map follows its picture and settings, the depth button shows the depth."""
    layout, error = page.layout, page.prompt.error
    canny, dep, boxes = layout.canny, layout.depth, layout.boxes

    def refuse(path):
        """(the input, the error box) after a file came into a layout input: a file that is no picture is taken
        out, and the box says why; a picture changes nothing."""
        problem = h.upload_problem(path, limits) if path else None
        return (gr.update(), gr.update()) if problem is None else (None, error_html(problem))

    def _canny_preview(path, low, high, blur):  # the event's name (tests/test_webui_security.py calls it)
        return canny_preview(path, low, high, blur, limits)

    for image in (canny.image, dep.image, dep.map, boxes.background):
        image.upload(refuse, [image], [image, error], **UI)
    boxes.mask_refused.change(_mask_refused, [boxes.mask_refused], [error], **UI)
    demo.load(None, None, None, js=WATCH_MASK_EDITOR, **UI)
    demo.load(depth.tab_note, None, [dep.note], **UI)
    for widget in canny.values:
        widget.change(_canny_preview, canny.values, [canny.preview, error], **UI)
    dep.show.click(_depth_preview, [dep.image, dep.map], [dep.preview, error], api_visibility="undocumented")


def _mask_refused(reported: str | None):
    """The error box for a file the mask editor could not decode (``count:name`` from the page's watcher)."""
    name = (reported or "").partition(":")[2]
    if not name:
        return gr.update()
    return error_html(REFUSED + h.unreadable_message(h.name_of(name)))


def canny_preview(path, low, high, blur, limits: WebLimits):
    """The edge map of the Canny picture; no picture, or a file that is none (which the input's upload event
    refuses, in :func:`wire_inputs`), leaves the error box to the event that said why."""
    from sigma_studio.model.images import open_image, to_rgb
    from sigma_studio.model.request.control import canny_edges

    if not path or h.upload_problem(path, limits):
        return None, gr.update()
    try:
        return canny_edges(to_rgb(open_image(path)), int(low), int(high), int(blur)), ""
    except Exception as exc:  # noqa: BLE001 - a message on the page, never Gradio's generic error
        return None, error_html(h.message_of(exc))


def _depth_preview(image, depth_map):
    try:
        return h.depth_preview(image, depth_map), ""
    except gr.Error as exc:
        return None, error_html(str(exc.message))
