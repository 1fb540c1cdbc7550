"""The shapes world: a small, fixed world where a SIGMA model can be trained on a CPU and checked by pixels.

* :mod:`.world` draws it (six shapes, eight colours, anti-aliased, on square canvases);
* :mod:`.tasks` turns it into SIGMA-format training and evaluation rows (compose, select, layout, background,
  text), with some (shape, colour) pairs held out of training;
* :mod:`.evaluate` reads a generated picture back by its pixels and scores it per task family.

``sigma shapes make`` writes the data, ``sigma shapes train`` reproduces the shipped ``shapes`` model and
``sigma shapes eval`` prints the per-family table.
"""

from .world import COLOURS, SHAPES, Thing, render

__all__ = ["COLOURS", "SHAPES", "Thing", "render"]
