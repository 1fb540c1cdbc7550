"""The Gradio web UI: ``build_demo(pipeline)`` returns the Blocks; ``sigma webui`` (or ``python app.py``) serves it."""
