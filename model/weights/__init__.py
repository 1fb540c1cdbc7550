"""Weights: where they come from (the hub or a folder), the architecture their configs describe, the one loader
(strict key matching) and the loading modes (bf16, NF4/INT8, CPU offload, device maps)."""
