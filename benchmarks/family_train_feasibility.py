"""Can the tiny Qwen-Image / Z-Image be trained on the caption dataset on CPU, as the tiny FLUX.1
was (quant_guard/model/tiny/train.py: VAE 1500 steps x 32, then DiT + text encoder 3000 steps x
128, about 23 minutes on 2 cores)? Runs a time-boxed piece of that recipe with the family's own
pieces (its scheduler template's flow-matching training targets and weights, the pipeline's
prompt encoding, the DiT's own forward) and prints seconds per step, the loss trend and the
extrapolated cost of the full recipe.

Usage: ``python benchmarks/family_train_feasibility.py --family z-image --seconds 150 --batch 32``
(one thread; ``--threads`` to change it). ``--family qwen-image --batched --no-vae`` times the DiT
with the batch at once instead of the pipeline's one-sample model_fn. The numbers in
quant_guard/model/tiny_<family>/FACTS.md come from these commands.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from typing import Any

import torch

from quant_guard.judge import scenes as ds

FLUX_RECIPE = {"vae_steps": 1500, "vae_batch": 32, "dit_steps": 3000, "dit_batch": 128}


def _images(seed: int) -> tuple[torch.Tensor, list[str]]:
    images, captions = ds.make_dataset(seed, 1, jitter=0)  # one image per caption, as train.py's stage 2
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0, captions


class QwenImage:
    template = "Qwen-Image"
    autocast = True  # float32 parameters, bf16 autocast (as train.py)

    def __init__(self, batched: bool = False) -> None:
        from diffsynth.models.qwen_image_vae import QwenImageVAE
        from diffsynth.pipelines.qwen_image import QwenImageUnit_PromptEmbedder

        from quant_guard.model.tiny_qwen_image import architecture as arch
        from quant_guard.model.tiny_qwen_image.tokenizers import build_tokenizer

        self.dit, self.text_encoder = arch.TinyQwenImageDiT(), arch.TinyQwenImageTextEncoder()
        self.vae = QwenImageVAE(**arch.vae_kwargs())  # untrained: latents for timing only
        self.unit = QwenImageUnit_PromptEmbedder()
        self.pipe = SimpleNamespace(tokenizer=build_tokenizer(), text_encoder=self.text_encoder, device="cpu")
        self.batched = batched

    def vae_step_seconds(self, images: torch.Tensor, batch: int, steps: int) -> float:
        opt = torch.optim.AdamW(self.vae.parameters(), lr=2e-3)
        t0 = time.perf_counter()
        for i in range(steps):
            x = images[torch.randint(0, len(images), (batch,))]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rec = self.vae.decode(self.vae.encode(x)).float()
            loss = (rec - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / steps

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vae.encode(images[i:i + 64]) for i in range(0, len(images), 64)])

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.dit.parameters()) + list(self.text_encoder.parameters())

    def predict(self, xt: torch.Tensor, timestep: torch.Tensor, captions: list[str]) -> torch.Tensor:
        from diffsynth.pipelines.qwen_image import model_fn_qwen_image

        if self.batched:
            return self.predict_batched(xt, timestep, captions)

        # one sample at a time: model_fn_qwen_image unpatchifies with B=1 (as the pipeline calls it)
        embeds = self.unit.encode_prompt(self.pipe, captions)
        size = xt.shape[-1] * 8
        return torch.cat([model_fn_qwen_image(dit=self.dit, latents=xt[i:i + 1], timestep=timestep[i:i + 1],
                                              prompt_emb=e[None], prompt_emb_mask=torch.ones(1, len(e), dtype=torch.long),
                                              height=size, width=size) for i, e in enumerate(embeds)])


    def predict_batched(self, xt: torch.Tensor, timestep: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """The whole batch at once: ``model_fn_qwen_image``'s lines for a batch (it, and
        ``QwenImageDiT.forward``, read a batch as frames of one image). Prompts are zero-padded to
        the longest and, unlike the pipeline, padding tokens are attended: a timing, not the
        pipeline's math."""
        from einops import rearrange

        dit = self.dit
        embeds = self.unit.encode_prompt(self.pipe, captions)
        longest = max(len(e) for e in embeds)
        prompt = torch.stack([torch.cat([e, e.new_zeros(longest - len(e), e.shape[1])]) for e in embeds])
        h, w = xt.shape[2] // 2, xt.shape[3] // 2
        image = dit.img_in(rearrange(xt, "B C (H P) (W Q) -> B (H W) (C P Q)", P=2, Q=2))
        conditioning = dit.time_text_embed(timestep / 1000, image.dtype)
        text = dit.txt_in(dit.txt_norm(prompt))
        rotary = dit.pos_embed([(1, h, w)], [longest], device=xt.device)
        for block in dit.transformer_blocks:
            text, image = block(image=image, text=text, temb=conditioning, image_rotary_emb=rotary)
        image = dit.proj_out(dit.norm_out(image, conditioning))
        return rearrange(image, "B (H W) (C P Q) -> B C (H P) (W Q)", H=h, W=w, P=2, Q=2)


class ZImage:
    template = "Z-Image"
    # bf16 parameters without autocast: under autocast model_fn_z_image_turbo mixes float32 and
    # bf16 (it writes the float32 caption pad token into bf16 features), and its timestep embedder
    # casts to bf16 itself, so float32 parameters fail too
    autocast = False

    def __init__(self) -> None:
        from diffsynth.pipelines.z_image import ZImageUnit_PromptEmbedder

        from quant_guard.model.tiny.build import ensure_tiny_checkpoint
        from quant_guard.model.tiny.train import _load_vae
        from quant_guard.model.tiny_z_image import architecture as arch
        from quant_guard.model.tiny_z_image.tokenizers import CHAT_TEMPLATE
        from quant_guard.model.tiny_qwen_image.tokenizers import build_tokenizer

        self.dit = arch.build_dit().to(torch.bfloat16)
        self.text_encoder = arch.TinyZImageTextEncoder().to(torch.bfloat16)
        self.encoder, _ = _load_vae(ensure_tiny_checkpoint().vae)  # the shipped (trained) tiny FLUX.1 VAE
        self.unit = ZImageUnit_PromptEmbedder()
        self.pipe = SimpleNamespace(tokenizer=build_tokenizer(CHAT_TEMPLATE), text_encoder=self.text_encoder)

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encoder(images[i:i + 64]) for i in range(0, len(images), 64)])

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.dit.parameters()) + list(self.text_encoder.parameters())

    def predict(self, xt: torch.Tensor, timestep: torch.Tensor, captions: list[str]) -> torch.Tensor:
        # The pipeline pads every prompt to 512 tokens; the encoder is causal, so the valid tokens'
        # states do not depend on right padding and 32 gives the same embeddings for less work.
        embeds = self.unit.encode_prompt(self.pipe, list(captions), device="cpu", max_sequence_length=32)
        # One sample at a time through the pipeline's own model_fn_z_image_turbo: it reads a batch
        # as video frames, and ZImageDiT.forward's batched non-omni path fails in DiffSynth 2.1.12
        # (patchify_and_embed returns 3 values where it unpacks 7).
        from diffsynth.pipelines.z_image import model_fn_z_image_turbo

        return torch.cat([model_fn_z_image_turbo(self.dit, latents=xt[i:i + 1], timestep=timestep[i:i + 1],
                                                 prompt_embeds=embeds[i]) for i in range(len(xt))])


def train(model: Any, seconds: float, batch: int, lr: float, log_every: int = 10) -> tuple[float, list[float]]:
    from diffsynth.diffusion import FlowMatchScheduler

    images, captions = _images(0)
    latents = model.latents(images).to(torch.float32 if model.autocast else torch.bfloat16)
    scheduler = FlowMatchScheduler(model.template)
    scheduler.set_timesteps(1000, training=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    losses: list[float] = []
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        tid = torch.randint(0, len(scheduler.timesteps), (batch,), generator=gen)
        sigma = scheduler.sigmas[tid].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=gen)
        xt, target = ((1 - sigma) * x0 + sigma * noise).to(x0.dtype), (noise - x0).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.autocast):
            pred = model.predict(xt, scheduler.timesteps[tid], [captions[i] for i in idx.tolist()])
        loss = (((pred.float() - target) ** 2).mean(dim=(1, 2, 3)) * scheduler.linear_timesteps_weights[tid]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(((pred.float() - target) ** 2).mean().item())
        steps += 1
        if steps % log_every == 0:
            print(f"  step {steps:4d}  {time.perf_counter() - t0:6.1f}s  mse(last {log_every}) "
                  f"{sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    return (time.perf_counter() - t0) / steps, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=("qwen-image", "z-image"), required=True)
    p.add_argument("--seconds", type=float, default=150.0, help="time box of the DiT + text encoder training")
    p.add_argument("--batch", type=int, default=FLUX_RECIPE["dit_batch"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batched", action="store_true",
                   help="qwen-image: the batch through QwenImageDiT.forward at once (timing only), not the model_fn per sample")
    p.add_argument("--no-vae", action="store_true", help="qwen-image: skip the VAE step timing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = QwenImage(args.batched) if args.family == "qwen-image" else ZImage()
    print(f"{args.family}: DiT {sum(x.numel() for x in model.dit.parameters()):,} parameters, text encoder "
          f"{sum(x.numel() for x in model.text_encoder.parameters()):,}; {args.threads} thread(s)")
    vae_total = 0.0
    if isinstance(model, QwenImage) and not args.no_vae:
        vae_s = model.vae_step_seconds(_images(0)[0], FLUX_RECIPE["vae_batch"], 3)
        vae_total = vae_s * FLUX_RECIPE["vae_steps"]
        print(f"VAE (QwenImageVAE, untrained): {vae_s:.2f} s/step at batch {FLUX_RECIPE['vae_batch']}"
              f" -> {FLUX_RECIPE['vae_steps']} steps {vae_total / 60:.1f} min")
    step_s, losses = train(model, args.seconds, args.batch, args.lr)
    # seconds per sample x the recipe's samples: the model_fns take one sample at a time, so the
    # cost is linear in the batch
    dit_total = step_s / args.batch * FLUX_RECIPE["dit_steps"] * FLUX_RECIPE["dit_batch"]
    first, last = sum(losses[:5]) / min(5, len(losses)), sum(losses[-5:]) / min(5, len(losses))
    print(f"DiT + text encoder: {len(losses)} steps, {step_s:.2f} s/step at batch {args.batch}; "
          f"mse first 5 {first:.4f}, last 5 {last:.4f}")
    print(f"full FLUX.1 recipe ({FLUX_RECIPE['dit_steps']} x {FLUX_RECIPE['dit_batch']} samples) on "
          f"{args.threads} thread(s): DiT {dit_total / 60:.0f} min"
          + (f" + VAE {vae_total / 60:.0f} min" if vae_total else
             " (VAE: the shipped tiny FLUX.1 VAE)" if isinstance(model, ZImage) else " (VAE not timed)"))


if __name__ == "__main__":
    main()
