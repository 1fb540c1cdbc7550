"""The mask editor: Gradio's ``ImageEditor``, held to what the page ever sends it.

Gradio's editor takes a layer posted to its component server at the ``index`` the client names, growing a list to
it first (an index of 500 000 000 allocates 4 GB), keeps every posted set of layers under a client-chosen id until
an event reads it, and decodes every layer an event names, however many and however large. The page draws on one
layer of a 256 px canvas (it offers no other): this editor refuses a layer index past :data:`MOST_LAYERS`, keeps at most
:data:`MOST_BLOBS` posted sets (the oldest goes), reads at most :data:`MOST_LAYERS` layers, and opens each picture
with the formats the references are read in (:data:`model.images.PICTURE_FORMATS`: no plugin that calls out to
Ghostscript), refusing one over :data:`MAX_LAYER_PIXELS` from its header, before it is decoded.
"""

from __future__ import annotations

import io
import logging

import gradio as gr
from gradio.components.base import server
from gradio.data_classes import FileData
from PIL import Image

from sigma_studio.model.images import PICTURE_FORMATS

log = logging.getLogger(__name__)
MOST_LAYERS = 4  # layers a client may post or send (the page draws on one)
MOST_BLOBS = 32  # posted layer sets kept while their event is awaited; past it the oldest is dropped
MAX_LAYER_PIXELS = 16_000_000  # one layer, background or composite (a phone photo uploaded as a mask fits)


class _Guarded:
    """The methods :data:`MaskEditor` takes in place of ``gr.ImageEditor``'s (a namespace: Gradio names a server
    function by its ``__name__``, so each keeps the name it replaces)."""

    @server
    def accept_blobs(self, data):
        """Gradio's, for a layer index the page could have sent; others are dropped (and logged)."""
        fields = data.data
        index = str(fields.get("index") or "").strip()
        if fields.get("type") == "layer" and index not in ("", "null"):
            if not index.isdigit() or int(index) >= MOST_LAYERS:
                log.warning("mask editor: a layer posted at index %.20s was dropped (at most %d)", index, MOST_LAYERS)
                return None
        if fields.get("id") not in self.blob_storage:  # (list() copies the keys at once: events pop beside this)
            for old in list(self.blob_storage)[: max(0, len(self.blob_storage) + 1 - MOST_BLOBS)]:
                self.blob_storage.pop(old, None)
        return gr.ImageEditor.accept_blobs(self, data)

    def preprocess(self, payload):
        """Gradio's, on at most :data:`MOST_LAYERS` layers."""
        if payload is not None and payload.layers and len(payload.layers) > MOST_LAYERS:
            payload = payload.model_copy(update={"layers": payload.layers[:MOST_LAYERS]})
        return gr.ImageEditor.preprocess(self, payload)

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        """Gradio's, once the picture's header says it is a picture of an allowed format and size."""
        if file is not None:
            source = file.path if isinstance(file, FileData) else io.BytesIO(bytes(file))
            try:
                with Image.open(source, formats=PICTURE_FORMATS) as picture:
                    width, height = picture.size
            except Image.DecompressionBombError:  # over the server's own limit (webui.server)
                raise gr.Error(
                    "The mask is too large to decode safely: resize it first", print_exception=False
                ) from None
            except (OSError, SyntaxError, ValueError):
                why = f"The mask editor takes a picture ({', '.join(PICTURE_FORMATS)})"
                raise gr.Error(why, print_exception=False) from None
            if width * height > MAX_LAYER_PIXELS:
                raise gr.Error(f"The mask is {width}x{height}: at most {MAX_LAYER_PIXELS // 1_000_000} megapixels; "
                               "resize it first", print_exception=False)  # fmt: skip
        return gr.ImageEditor.convert_and_format_image(self, file, flatten_on_white)


# A class, made as inputs.DropImage is (without the component metaclass's hook that writes a .pyi stub).
_META = type(gr.ImageEditor)
MaskEditor = super(_META, _META).__new__(
    _META, "MaskEditor", (gr.ImageEditor,),
    {"__module__": __name__, "__qualname__": "MaskEditor", "is_template": True, "accept_blobs": _Guarded.accept_blobs,
     "preprocess": _Guarded.preprocess, "convert_and_format_image": _Guarded.convert_and_format_image},
)  # fmt: skip
