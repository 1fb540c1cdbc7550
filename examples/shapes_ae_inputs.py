"""How well a shapes model's autoencoder keeps each kind of picture the MoT reads: the mean PSNR of encode (the
posterior mean) then decode, for the references and targets of SIGMA's five families and for SIGMA-GEN's identity
sheets, spatial controls and targets, on held-out rows drawn here (docs/SHAPES.md, "What the autoencoder keeps").

With PROBE_STEPS, then whether the *encoder* keeps SIGMA-GEN's inputs (the MoT reads only their latents; the decoder
only ever draws targets): a copy of the decoder alone is trained for that many steps on the latents of fresh identity
sheets (cut into their 64 px cells), spatial controls and targets, and held-out ones are read again.

python examples/shapes_ae_inputs.py [MODEL] [ROWS] [PROBE_STEPS]   # shapes, 40 rows a family / count, 0
"""

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from sigma_studio.finetune.autoencoder import reconstruction_psnr
from sigma_studio.finetune.sigmagen_recipe import make_eval
from sigma_studio.model.data.dataset import SigmaRow, iter_rows, parquet_files
from sigma_studio.model.hub import shipped_shapes_model
from sigma_studio.model.images import to_tensor
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.weights.arch_config import read_arch_config
from sigma_studio.model.weights.loader import load_autoencoder

SIGMAGEN_INPUTS = ("identity sheet", "spatial control", "background")  # a SIGMA-GEN row's pictures before its target


def kinds(folder: Path, sigmagen: bool) -> dict[str, list[torch.Tensor]]:
    """Each row's pictures by what they are and their size."""
    found = defaultdict(list)
    for row in iter_rows(parquet_files(str(folder))):
        if not isinstance(row, SigmaRow):
            continue
        pictures = row.decode_images()
        for k, picture in enumerate(pictures):
            last = k == len(pictures) - 1
            kind = (
                ("target" if last else SIGMAGEN_INPUTS[min(k, 2)]) if sigmagen else ("target" if last else "reference")
            )
            found[f"{'SIGMA-GEN' if sigmagen else 'SIGMA'} {kind} {picture.width}x{picture.height}"].append(
                to_tensor(picture)
            )
    return found


def cells(found: dict[str, list[torch.Tensor]], kind: str) -> torch.Tensor:
    """The pictures of one kind cut into 64 px cells (an identity sheet is a grid of them)."""
    return torch.stack([
        x[:, i : i + 64, j : j + 64]
        for key, pictures in found.items() if kind in key
        for x in pictures for i in range(0, x.shape[1], 64) for j in range(0, x.shape[2], 64)
    ])  # fmt: skip


def probe_decoder(vae, arch, steps: int) -> None:
    """Train a copy of the decoder on fresh SIGMA-GEN pictures' latents; print held-out PSNR before and after."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_eval(Path(tmp) / "train", 150, 7, arch.routing_step, arch.sheet_rows)  # seeds no held-out scene uses
        make_eval(Path(tmp) / "held-out", 20, 0, arch.routing_step, arch.sheet_rows)
        train, held = kinds(Path(tmp) / "train", True), kinds(Path(tmp) / "held-out", True)
    sets = {kind: (cells(train, kind), cells(held, kind)) for kind in ("identity sheet", "spatial control", "target")}
    with torch.no_grad():
        before = {kind: reconstruction_psnr(vae, held) for kind, (_, held) in sets.items()}
        x = torch.cat([pictures for pictures, _ in sets.values()])
        z = vae.encode(x)
    vae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=3e-4)
    start = time.time()
    for step in range(steps):
        pick = torch.randint(len(x), (16,))
        rec = vae.decode(z[pick])
        loss = F.l1_loss(rec, x[pick]) + F.mse_loss(rec, x[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"probe step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    vae.eval()
    with torch.no_grad():
        for kind, (pictures, held) in sets.items():
            after = reconstruction_psnr(vae, held)
            what = f"{kind} (64 px cells, {len(pictures)} to train, {len(held)} held out)"
            print(f"{what}: {before[kind]:.1f} dB -> {after:.1f} dB")


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "shapes"
    model = shipped_shapes_model() if name == "shapes" else Path(name)
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    probe_steps = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    arch = read_arch_config(model)
    vae = load_autoencoder(model / "ae.safetensors", arch)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        make_world(Path(tmp) / "world", rows=10, eval_rows=rows)
        make_eval(Path(tmp) / "sigmagen", rows, 0, arch.routing_step, arch.sheet_rows)
        found = {**kinds(Path(tmp) / "world" / "eval", False), **kinds(Path(tmp) / "sigmagen", True)}
    print(f"{'picture':<40} {'n':>5} {'PSNR':>8}")
    for kind, pictures in sorted(found.items()):
        with torch.no_grad():
            print(f"{kind:<40} {len(pictures):>5} {reconstruction_psnr(vae, torch.stack(pictures)):>6.1f} dB")
    if probe_steps:
        probe_decoder(vae, arch, probe_steps)


if __name__ == "__main__":
    main()
