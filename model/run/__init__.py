"""Running a request: the pipeline, the sequence layout and its attention masks, the engine (prefill and the
cached denoising query), the sampler, and the packed training forward."""
