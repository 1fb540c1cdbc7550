"""SIGMA post-training: data, packing, the training loop, checkpoints and distributed setup.

sigma finetune --dataset Xiaoyan667/SIGMA-dataset --out runs/sigma-ft            # one GPU (or CPU)
torchrun --nproc-per-node 8 -m sigma_studio.cli finetune --dataset ... --out runs/sigma-ft   # FSDP2 on a node
"""
