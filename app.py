"""SIGMA Studio web UI for Hugging Face Spaces: ``python app.py`` takes the same options as ``sigma webui``."""

import sys

from sigma_studio.cli.main import main

if __name__ == "__main__":
    main(["webui", *sys.argv[1:]])
