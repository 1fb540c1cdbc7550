"""The Gradio web UI: ``build_demo(pipeline)`` returns the Blocks; ``python app.py`` serves it."""
