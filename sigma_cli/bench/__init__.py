"""The benchmark library behind ``sigma bench`` (the command itself: ``sigma_cli/bench_cmd.py``).

Random-weight models at real scale (same FLOPs as the real weights), timed; one module per concern, dependencies
flowing one way (weights and flops first, then the cases, the suites, and last what they print):

- ``weights``: the random-weight reader, the pipeline built from it at any architecture and mode, the mid model;
- ``flops``: the FLOP model of a denoising step and the measured matmul rate it is compared against;
- ``cases``: case (a) text-to-image and case (b) SIGMA three references, and ``run_case`` that times one;
- ``equivalence``: batched guidance branches against the plain path;
- ``modes``: every loading mode, both cases (``--suite modes``, ``bench.json``);
- ``layouts``, ``speed``, ``train_memory`` (+ ``train_memory_rank``), ``device``: the other suites;
- ``report``: each suite's JSON file and the table it prints.
"""
