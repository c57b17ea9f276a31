"""Train the embedded ``tiny`` checkpoint on CPU from a seed (the procedural dataset of
``quant_guard.judge.scenes``), in two stages:

1. VAE (on jittered scenes): the tiny Flux encoder + decoder as an autoencoder (L1 + MSE reconstruction), latents
   kept near N(0, 1) by a per-channel moment penalty and made robust by a little latent noise.
2. DiT + T5 jointly (CLIP frozen at its seeded weights) on one image per caption, with FLUX.1 flow matching through DiffSynth's own pieces:
   ``FlowMatchScheduler("FLUX.1").set_timesteps(1000, training=True)`` (noising, target and
   loss weight: the math of ``diffsynth.diffusion.loss.FlowMatchSFTLoss`` with one timestep
   per sample), the pipeline's prompt encoding (``FluxImageUnit_PromptEmbedder``) and
   ``model_fn_flux_image``, the function the pipeline denoises with.

Usage: ``python -m quant_guard.model.tiny.train --out DIR --seed 0`` (about 23 minutes on 2 CPU cores;
``--threads 1``, as for the shipped files, about 36 on a loaded machine). Writes the four bf16
safetensors files ``write_tiny_checkpoint`` ships, plus ``training.json``; the VAE is saved as
soon as stage 1 ends, so ``--vae-from DIR`` can rerun stage 2 alone. Losses go to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from quant_guard.model.tiny import architecture as arch
from quant_guard.judge import scenes as ds

os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 5% of the peak."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (the pipeline's ``preprocess_image`` range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class TrainingLog:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)


def train_vae(images: torch.Tensor, steps: int, batch: int, lr: float, gen: torch.Generator,
              log: TrainingLog) -> tuple[arch.TinyFluxVAEEncoder, arch.TinyFluxVAEDecoder, float]:
    # bf16 autocast: faster convolutions on CPU (and the shipped VAE runs in bf16 anyway)
    encoder, decoder = arch.TinyFluxVAEEncoder(), arch.TinyFluxVAEDecoder()
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, max(1, steps // 20)))
    recent: list[float] = []
    for step in range(steps):
        x = images[torch.randint(0, len(images), (batch,), generator=gen)]
        rec_loss, reg, mu, sd = vae_step(encoder, decoder, x, gen, opt, sched, params)
        recent = (recent + [rec_loss])[-50:]
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step:5d}  rec {np.mean(recent):.4f}  reg {reg.item():.4f}  "
                f"latent mean {mu.mean().item():+.3f} std {sd.mean().item():.3f}")
    return encoder.eval(), decoder.eval(), float(np.mean(recent))


def vae_step(encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
             x: torch.Tensor, gen: torch.Generator, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler, params: list[torch.nn.Parameter],
             ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step of a tiny VAE on the batch ``x`` (every tiny VAE trains this way):
    L1 + L2 reconstruction of the decoded latent with noise added, plus 0.1 x a moment penalty.
    Returns (reconstruction loss, penalty, per-channel latent mean and std)."""
    with bf16_autocast():
        z = encode(x).float()
        # moment penalty: each latent channel ~ zero mean, unit std over the batch
        mu, sd = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        reg = (mu ** 2).mean() + ((sd - 1) ** 2).mean()
        noisy = z + 0.1 * torch.randn(z.shape, generator=gen)  # decoder tolerates DiT error
        rec = decode(noisy).float()
    rec_loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
    loss = rec_loss + 0.1 * reg
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return rec_loss.item(), reg, mu, sd


@torch.no_grad()
def _vae_psnr(encoder: torch.nn.Module, decoder: torch.nn.Module, images: torch.Tensor) -> float:
    rec = decoder(encoder(images)).float().clamp(-1, 1)
    mse = ((rec - images) * 127.5).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())


@torch.no_grad()
def encode_all(encoder: torch.nn.Module, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    return torch.cat([encoder(images[i:i + chunk]).float() for i in range(0, len(images), chunk)])


def _tokenizers(tmp: Path):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer, T5TokenizerFast

    from quant_guard.model.tiny.tokenizers import write_tokenizers

    write_tokenizers(tmp / "tokenizer_clip", tmp / "tokenizer_t5")
    return (CLIPTokenizer.from_pretrained(str(tmp / "tokenizer_clip")),
            T5TokenizerFast.from_pretrained(str(tmp / "tokenizer_t5")))


def _is_qk_norm(name: str) -> bool:
    """The RMSNorm weights of attention queries and keys (``...norm_q_a.weight`` etc.)."""
    return ".norm_q_" in name or ".norm_k_" in name


def train_dit(latents: torch.Tensor, captions: list[str], steps: int, batch: int, lr: float,
              text_lr: float, gen: torch.Generator, log: TrainingLog) -> tuple[dict[str, torch.nn.Module], float]:
    from diffsynth.diffusion import FlowMatchScheduler
    from diffsynth.models.flux_text_encoder_clip import FluxTextEncoderClip
    from diffsynth.pipelines.flux_image import FluxImageUnit_PromptEmbedder, model_fn_flux_image

    dit = arch.TinyFluxDiT()
    clip = FluxTextEncoderClip(**arch.clip_kwargs())
    t5 = arch.TinyFluxTextEncoderT5()
    with tempfile.TemporaryDirectory() as tmp:
        tok_clip, tok_t5 = _tokenizers(Path(tmp))
    embedder = FluxImageUnit_PromptEmbedder()
    scheduler = FlowMatchScheduler("FLUX.1")
    scheduler.set_timesteps(1000, training=True)

    unique = sorted(set(captions))
    cap_index = torch.tensor([unique.index(c) for c in captions])
    # CLIP stays at its seeded weights (rounded to bf16 as shipped): its pooled embedding of
    # each caption is computed once. T5 trains with the DiT.
    for prm in clip.parameters():
        prm.requires_grad_(False)
        prm.data = prm.data.to(torch.bfloat16).float()
    with torch.no_grad():
        pooled_all = torch.cat([embedder.encode_prompt_using_clip(unique[i:i + 64], clip, tok_clip, 77, "cpu")
                                for i in range(0, len(unique), 64)])
    # The QK RMSNorm weights stay at 1.0, which float8_e4m3fn stores exactly. Trained, they
    # drift a few percent from 1.0, where e4m3 has a spacing of 1/16..1/8: float8 storage
    # erased that drift, and this one effect made most of the honest float8 error.
    frozen = [prm for name, prm in dit.named_parameters() if _is_qk_norm(name)]
    for prm in frozen:
        prm.requires_grad_(False)
    opt = torch.optim.AdamW([
        {"params": [prm for prm in dit.parameters() if prm.requires_grad], "lr": lr},
        {"params": t5.parameters(), "lr": text_lr},
    ], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, max(1, steps // 20)))
    params = [p for g in opt.param_groups for p in g["params"]]
    recent: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        # the pipeline's own T5 prompt encoding, once per distinct caption in the batch
        caps, inverse = torch.unique(cap_index[idx], return_inverse=True)
        with bf16_autocast():
            prompt_emb = embedder.encode_prompt_using_t5(
                [unique[i] for i in caps.tolist()], t5, tok_t5, ds.T5_SEQUENCE_LENGTH, "cpu")[inverse]
        pooled = pooled_all[cap_index[idx]]
        # FlowMatchSFTLoss, one timestep per sample
        tid = torch.randint(0, len(scheduler.timesteps), (batch,), generator=gen)
        sigma = scheduler.sigmas[tid].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=gen)
        xt = (1 - sigma) * x0 + sigma * noise  # scheduler.add_noise
        target = noise - x0  # scheduler.training_target
        weight = scheduler.linear_timesteps_weights[tid]  # scheduler.training_weight
        with bf16_autocast():
            pred = model_fn_flux_image(
                dit=dit, latents=xt, timestep=scheduler.timesteps[tid], prompt_emb=prompt_emb,
                pooled_prompt_emb=pooled, guidance=torch.full((batch,), ds.EMBEDDED_GUIDANCE),
                text_ids=torch.zeros(batch, prompt_emb.shape[1], 3))
        per_sample = ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))
        loss = (per_sample * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        recent = (recent + [per_sample.mean().item()])[-100:]
        if step % 100 == 0 or step == steps - 1:
            log(f"dit step {step:5d}  flow-matching mse {np.mean(recent):.4f}  weighted {loss.item():.4f}")
    models = {"dit": dit.eval(), "text_encoder_clip": clip.eval(), "text_encoder_t5": t5.eval()}
    return models, float(np.mean(recent))


def _bf16(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses shared storage (T5's tied embedding appears twice)
    return {prefix + k: v.detach().to(torch.bfloat16).contiguous().clone() for k, v in state.items()}


def save_weights(out: Path, models: dict[str, torch.nn.Module], encoder: torch.nn.Module,
                 decoder: torch.nn.Module) -> None:
    """The four files with the names and keys of ``build.write_tiny_checkpoint``'s seeded path."""
    from safetensors.torch import save_file

    for name, model in models.items():
        out.mkdir(parents=True, exist_ok=True)
        save_file(_bf16(model.state_dict()), str(out / f"{name}.safetensors"))
    _save_vae(out, encoder, decoder)


def _save_vae(out: Path, encoder: torch.nn.Module, decoder: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    vae = {**_bf16(encoder.state_dict(), "encoder."), **_bf16(decoder.state_dict(), "decoder.")}
    save_file(vae, str(out / "vae.safetensors"))


def _load_vae(path: Path) -> tuple[arch.TinyFluxVAEEncoder, arch.TinyFluxVAEDecoder]:
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(path)).items()}
    encoder, decoder = arch.TinyFluxVAEEncoder(), arch.TinyFluxVAEDecoder()
    encoder.load_state_dict(arch.vae_encoder_converter(state))
    decoder.load_state_dict(arch.vae_decoder_converter(state))
    return encoder.eval(), decoder.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quant_guard.model.tiny.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the four .safetensors files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-scene", type=int, default=12, help="jittered images per scene for the VAE (360 scenes)")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--dit-steps", type=int, default=3000)
    p.add_argument("--dit-batch", type=int, default=128)
    p.add_argument("--dit-lr", type=float, default=1e-3)
    p.add_argument("--text-lr", type=float, default=1e-3)
    p.add_argument("--vae-from", type=Path, default=None,
                   help="skip stage 1: reuse vae.safetensors from this folder (for experiments)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    log = TrainingLog()
    images_np, captions = ds.make_dataset(args.seed, args.per_scene)
    images = to_tensor(images_np)
    held_out = to_tensor(ds.make_dataset(args.seed + 1, 1)[0])
    log(f"dataset: {len(images)} images, {len(set(captions))} captions, sizes {arch.SIZES}")

    t0 = time.perf_counter()
    if args.vae_from:
        (encoder, decoder), vae_loss = _load_vae(args.vae_from / "vae.safetensors"), float("nan")
    else:
        encoder, decoder, vae_loss = train_vae(images, args.vae_steps, args.vae_batch, args.vae_lr, gen, log)
    vae_s = time.perf_counter() - t0
    for prm in list(encoder.parameters()) + list(decoder.parameters()):  # as shipped: bf16 values
        prm.data = prm.data.to(torch.bfloat16).float()
    if not args.vae_from:  # saved now too, so a stopped run can go on with --vae-from OUT
        _save_vae(args.out, encoder, decoder)
    psnr = _vae_psnr(encoder, decoder, held_out)
    latents = encode_all(encoder, images)
    log(f"vae done in {vae_s:.0f}s: held-out reconstruction PSNR {psnr:.1f} dB; "
        f"latents mean {latents.mean():+.3f} std {latents.std():.3f}")

    # the DiT learns one image per caption (no jitter): see quant_guard.judge.scenes
    canon_np, canon_captions = ds.make_dataset(args.seed, 1, jitter=0)
    canon_latents = encode_all(encoder, to_tensor(canon_np))
    t1 = time.perf_counter()
    models, dit_loss = train_dit(canon_latents, canon_captions, args.dit_steps, args.dit_batch, args.dit_lr,
                                 args.text_lr, gen, log)
    dit_s = time.perf_counter() - t1
    save_weights(args.out, models, encoder, decoder)
    report = {
        "command": "python -m quant_guard.model.tiny.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": repr(arch.SIZES), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "vae_seconds": round(vae_s), "dit_seconds": round(dit_s),
        "vae_final_reconstruction_loss": round(vae_loss, 5), "vae_held_out_psnr_db": round(psnr, 2),
        "latent_mean": round(float(latents.mean()), 4), "latent_std": round(float(latents.std()), 4),
        "dit_final_flow_matching_mse": round(dit_loss, 5),
    }
    (args.out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"done: vae {vae_s:.0f}s (loss {vae_loss:.4f}), dit {dit_s:.0f}s (loss {dit_loss:.4f}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
