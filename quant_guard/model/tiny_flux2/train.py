"""Training feasibility for the tiny FLUX.2 checkpoint on CPU, on the caption dataset of the tiny
FLUX.1 (``quant_guard.judge.scenes``), in the two stages of ``quant_guard.model.tiny.train``:

1. VAE (jittered scenes): ``Flux2VAE`` as an autoencoder through its own ``encode``/``decode``
   (packed 128-channel latents), latents kept near N(0, 1), a little latent noise.
2. DiT (one image per caption), the Qwen3 text encoder frozen at its seeded weights (as FLUX.2
   freezes its LLM): each caption's prompt embedding is computed once with the pipeline's own
   ``Flux2Unit_Qwen3PromptEmbedder.encode_prompt`` (512 tokens, as the pipeline pads), then flow
   matching through ``model_fn_flux2`` with ``FlowMatchScheduler("FLUX.2")``'s training sigmas.

Every stage stops at its step count or its budget of CPU seconds (``time.process_time``, not wall
time: the machine may be shared), whichever comes first, so a feasibility run is bounded. Usage:
``python -m quant_guard.model.tiny_flux2.train --out DIR --threads 1 --vae-seconds 120 --dit-seconds 300``.
Writes the checkpoint files (bf16) and ``training.json``; FACTS.md has the measured costs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quant_guard.judge import scenes as ds
from quant_guard.model.tiny.train import TrainingLog, bf16_autocast, lr_lambda, to_tensor, vae_step
from quant_guard.model.tiny_flux2 import architecture as arch

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")


def train_vae(images: torch.Tensor, steps: int, seconds: float, batch: int, lr: float, gen: torch.Generator,
              log: TrainingLog) -> tuple[torch.nn.Module, dict[str, float]]:
    vae = arch.new_vae()
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, max(1, steps // 20)))
    recent: list[float] = []
    t0, step = time.process_time(), 0
    while step < steps and time.process_time() - t0 < seconds:
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]
        rec_loss, reg, _, _ = vae_step(vae.encode, vae.decode, x, gen, opt, sched, params)
        recent = (recent + [rec_loss])[-50:]
        if step % 50 == 0:
            log(f"vae step {step:5d}  rec {np.mean(recent):.4f}  reg {reg.item():.4f}")
        step += 1
    elapsed = time.process_time() - t0
    return vae.eval(), {"vae_steps": step, "vae_seconds": elapsed, "vae_seconds_per_step": elapsed / max(1, step),
                        "vae_reconstruction_loss": float(np.mean(recent))}


@torch.no_grad()
def prompt_embeddings(text_encoder: torch.nn.Module, tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """(N, 512, 3 x text width): what the pipeline feeds the DiT for each caption."""
    from diffsynth.pipelines.flux2_image import Flux2Unit_Qwen3PromptEmbedder

    unit = Flux2Unit_Qwen3PromptEmbedder()
    return torch.cat([unit.encode_prompt(text_encoder, tokenizer, captions[i:i + 32], dtype=torch.float32,
                                         device="cpu")[0] for i in range(0, len(captions), 32)])


def train_dit(tokens: torch.Tensor, embeddings: torch.Tensor, steps: int, seconds: float, batch: int, lr: float,
              gen: torch.Generator, log: TrainingLog) -> tuple[torch.nn.Module, dict[str, float]]:
    from diffsynth.diffusion import FlowMatchScheduler
    from diffsynth.pipelines.flux2_image import Flux2Unit_ImageIDs, model_fn_flux2

    dit = arch.new_dit()
    scheduler = FlowMatchScheduler("FLUX.2")
    scheduler.set_timesteps(1000, training=True)
    side = int(round(tokens.shape[1] ** 0.5))
    image_ids = Flux2Unit_ImageIDs().prepare_latent_ids(side, side)
    text_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1),
                                    torch.arange(embeddings.shape[1]))[None]  # encode_prompt's text_ids
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, max(1, steps // 20)))
    recent: list[float] = []
    t0, step = time.process_time(), 0
    while step < steps and time.process_time() - t0 < seconds:
        idx = torch.randint(0, len(tokens), (batch,), generator=gen)
        x0 = tokens[idx]
        tid = torch.randint(0, len(scheduler.timesteps), (batch,), generator=gen)
        sigma = scheduler.sigmas[tid].view(-1, 1, 1)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma) * x0 + sigma * noise  # scheduler.add_noise
        target = noise - x0  # scheduler.training_target
        weight = scheduler.linear_timesteps_weights[tid]  # scheduler.training_weight
        with bf16_autocast():
            pred = model_fn_flux2(dit=dit, latents=xt, timestep=scheduler.timesteps[tid], embedded_guidance=4.0,
                                  prompt_embeds=embeddings[idx], text_ids=text_ids, image_ids=image_ids)
        per_sample = ((pred.float() - target) ** 2).mean(dim=(1, 2))
        loss = (per_sample * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [per_sample.mean().item()])[-50:]
        if step % 20 == 0:
            log(f"dit step {step:5d}  flow-matching mse {np.mean(recent):.4f}")
        step += 1
    elapsed = time.process_time() - t0
    return dit.eval(), {"dit_steps": step, "dit_seconds": elapsed, "dit_seconds_per_step": elapsed / max(1, step),
                        "dit_flow_matching_mse": float(np.mean(recent))}


def _save(path: Path, module: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).detach().contiguous().clone()
               for k, v in module.state_dict().items()}, str(path))


def main(argv: list[str] | None = None) -> int:
    from einops import rearrange
    from transformers import AutoTokenizer

    from quant_guard.model.tiny.build import TinyFamilyFiles
    from quant_guard.model.tiny_flux2.build import seeded_state_dicts
    from quant_guard.model.tiny_flux2.tokenizer import write_tokenizer

    p = argparse.ArgumentParser(prog="python -m quant_guard.model.tiny_flux2.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--per-scene", type=int, default=4)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-seconds", type=float, default=120)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--dit-steps", type=int, default=3000)
    p.add_argument("--dit-seconds", type=float, default=300)
    p.add_argument("--dit-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    log = TrainingLog()
    files = TinyFamilyFiles(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    write_tokenizer(files.tokenizer)
    images = to_tensor(ds.make_dataset(args.seed, args.per_scene)[0])
    vae, report = train_vae(images, args.vae_steps, args.vae_seconds, args.vae_batch, args.lr, gen, log)
    _save(files.vae, vae)
    canon_np, captions = ds.make_dataset(args.seed, 1, jitter=0)
    with torch.no_grad():
        latents = torch.cat([vae.encode(to_tensor(canon_np[i:i + 64])).float() for i in range(0, len(canon_np), 64)])
        rec = vae.decode(latents).float().clamp(-1, 1)
    mse = ((rec - to_tensor(canon_np)) * 127.5).pow(2).mean(dim=(1, 2, 3))
    report["vae_psnr_db"] = float((10 * torch.log10(255.0 ** 2 / mse)).mean())
    tokens = rearrange(latents, "B C H W -> B (H W) C")  # Flux2Unit_InputImageEmbedder's packing
    text_encoder = arch.TinyQwen3TextEncoder()
    text_encoder.load_state_dict({k: v.to(torch.bfloat16).float() if v.is_floating_point() else v
                                  for k, v in seeded_state_dicts(args.seed)["text_encoder"].items()})
    t = time.process_time()
    embeddings = prompt_embeddings(text_encoder.eval(), AutoTokenizer.from_pretrained(str(files.tokenizer)), captions)
    report["prompt_embedding_seconds"] = time.process_time() - t
    log(f"vae psnr {report['vae_psnr_db']:.1f} dB; {len(captions)} captions embedded {tuple(embeddings.shape)}")
    dit, dit_report = train_dit(tokens, embeddings, args.dit_steps, args.dit_seconds, args.dit_batch, args.lr, gen, log)
    report.update(dit_report)
    _save(files.dit, dit)
    _save(files.text_encoder, text_encoder)
    report.update({"threads": torch.get_num_threads(), "args": {k: str(v) for k, v in vars(args).items()}})
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
