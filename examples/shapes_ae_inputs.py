"""How well a shapes model's autoencoder keeps each kind of picture the MoT reads: the mean PSNR of encode (the
posterior mean) then decode, for the references and targets of SIGMA's five families and for SIGMA-GEN's identity
sheets, spatial controls and targets, on held-out rows drawn here (docs/SHAPES.md, "What the autoencoder keeps").

Every picture is first resized as the model resizes it (``ArchConfig.vae_transform``: an identity sheet of 2 subjects
is encoded at 32 x 64 px, of 3-4 at 64 x 64, of 5 at 64 x 40). With PROBE_STEPS, then whether the *encoder* keeps
SIGMA-GEN's inputs (the MoT reads only their latents; the decoder only ever draws targets): the loaded decoder (the
model's file is not touched) is trained alone for that many steps on the latents of fresh identity sheets, spatial
controls and targets, and held-out ones are read again.

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
from sigma_studio.model.images import resize, to_tensor
from sigma_studio.model.shapes.tasks import make_world
from sigma_studio.model.weights.arch_config import read_arch_config
from sigma_studio.model.weights.loader import load_autoencoder

SIGMAGEN_INPUTS = ("identity sheet", "spatial control")  # a SIGMA-GEN row's pictures, then its target


def kinds(folder: Path, sigmagen: bool, spec) -> dict[str, list[torch.Tensor]]:
    """Each row's pictures, resized by ``spec`` as the model resizes them, by what they are and their size."""
    found = defaultdict(list)
    for row in iter_rows(parquet_files(str(folder))):
        if not isinstance(row, SigmaRow):
            continue
        pictures = row.decode_images()
        for k, picture in enumerate(pictures):
            picture = resize(picture, spec)
            last = k == len(pictures) - 1
            kind = "target" if last else SIGMAGEN_INPUTS[k] if sigmagen else "reference"
            family = "SIGMA-GEN" if sigmagen else "SIGMA"
            found[f"{family} {kind} {picture.width}x{picture.height}"].append(to_tensor(picture))
    return found


def probe_decoder(vae, arch, steps: int) -> None:
    """Train the decoder alone on fresh SIGMA-GEN pictures' latents (each step a batch of one kind and size, drawn
    in proportion to their numbers); print each kind's held-out PSNR before and after."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_eval(Path(tmp) / "train", 150, 7, arch.routing_step, arch.sheet_rows)  # seeds no held-out scene uses
        make_eval(Path(tmp) / "held-out", 20, 0, arch.routing_step, arch.sheet_rows)
        train = {k: torch.stack(v) for k, v in kinds(Path(tmp) / "train", True, arch.vae_transform).items()}
        held = {k: torch.stack(v) for k, v in kinds(Path(tmp) / "held-out", True, arch.vae_transform).items()}
    with torch.no_grad():
        before = {kind: reconstruction_psnr(vae, pictures) for kind, pictures in held.items()}
        latents = {kind: vae.encode(pictures) for kind, pictures in train.items()}
    vae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=3e-4)
    names, sizes, start = list(train), torch.tensor([len(v) for v in train.values()], dtype=torch.float), time.time()
    for step in range(steps):
        kind = names[int(torch.multinomial(sizes, 1))]
        pick = torch.randint(len(train[kind]), (16,))
        rec = vae.decode(latents[kind][pick])
        loss = F.l1_loss(rec, train[kind][pick]) + F.mse_loss(rec, train[kind][pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"probe step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    vae.eval()
    with torch.no_grad():
        for kind in sorted(held):
            after = reconstruction_psnr(vae, held[kind])
            what = f"{kind} ({len(train[kind])} to train, {len(held[kind])} held out)"
            print(f"{what:<60} {before[kind]:.1f} dB -> {after:.1f} dB")


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
        spec = arch.vae_transform
        found = {**kinds(Path(tmp) / "world" / "eval", False, spec), **kinds(Path(tmp) / "sigmagen", True, spec)}
    print(f"{'picture':<40} {'n':>5} {'PSNR':>8}")
    for kind, pictures in sorted(found.items()):
        with torch.no_grad():
            print(f"{kind:<40} {len(pictures):>5} {reconstruction_psnr(vae, torch.stack(pictures)):>6.1f} dB")
    if probe_steps:
        probe_decoder(vae, arch, probe_steps)


if __name__ == "__main__":
    main()
