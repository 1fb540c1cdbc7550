"""Example scripts and the pictures they and the web UI's gallery use, installed as ``sigma_studio.examples``.

``python -m sigma_studio.examples.quickstart`` runs the quickstart from any folder.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
IMAGES = ROOT / "images"  # photographs for the gallery of the 7B models
SHAPES = ROOT / "shapes"  # the shapes world's example pictures
ASSETS = ROOT / "assets"  # the quickstart's reference picture
