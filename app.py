"""SIGMA Studio web UI: ``python app.py [--model sigma] [--mode auto] [--port 7860]`` (also a Hugging Face Space)."""

import argparse
import os

from sigma_studio.model import LoaderConfig, load_pipeline
from sigma_studio.webui.blocks import CSS, build_demo
from sigma_studio.webui.examples import IMAGES as EXAMPLES
from sigma_studio.webui.examples import SHAPES_IMAGES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--model", default=os.environ.get("SIGMA_MODEL", "sigma"), help="sigma | bagel | shapes | tiny | repo id | dir"
    )
    ap.add_argument(
        "--mode", default=os.environ.get("SIGMA_MODE", "auto"), help="auto | bf16 | nf4 | int8 | offload | cpu"
    )
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--share", action="store_true", help="create a public gradio.live link")
    ap.add_argument("--max-concurrency", type=int, default=1, help="generations running at once")
    ap.add_argument("--outputs", default="outputs/webui", help="where results are written (never overwritten)")
    args = ap.parse_args()
    gpu_wrapper = None
    if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU: import spaces before CUDA starts; hold a GPU only to generate
        import spaces

        gpu_wrapper = spaces.GPU(duration=180)
    pipe = load_pipeline(LoaderConfig(model=args.model, mode=args.mode))
    demo = build_demo(pipe, outputs=args.outputs, max_concurrency=args.max_concurrency, gpu_wrapper=gpu_wrapper)
    demo.queue(max_size=32).launch(
        server_name=args.host, server_port=args.port, share=args.share, css=CSS, max_file_size="20mb",
        allowed_paths=[args.outputs, str(EXAMPLES), str(SHAPES_IMAGES)], show_error=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
