"""A frozen Stable-Diffusion-layout model as a noise predictor (VAE encoder, UNet, text encoder, schedule).

Loads SD 1.x / 2.x (and DreamBooth fine-tunes: they are just other references) from a diffusers directory
or a hub id, optionally with a separate text encoder + tokenizer reference (the paper pairs
CompVis/stable-diffusion-v1-4's VAE/UNet with openai/clip-vit-large-patch14). Every network is frozen
(eval, requires_grad False) in the requested precision; everything this class returns is float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from trainables.devices import DTYPES  # noqa: F401  (re-exported: guidance and cost import it from here)
from trainables.frozen.lora_check import check_loras
from trainables.frozen.refs import resolve_diffusers_ref
from trainables.frozen.tokenizer import check_tokenizer

SD_SCALING_FACTOR = 0.18215   # SD 1.x/2.x VAE latent scale (read from the VAE config when present)


def sd_alphas_cumprod(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """alpha_bar_t of SD's scaled_linear schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _freeze(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)
    if any(p.device != device for p in module.parameters()):   # (a no-op .to() breaks fake-tensor tracing)
        module.to(device)
    module.eval()
    module.requires_grad_(False)
    return module


@dataclass
class TextEmbeddings:
    cond: torch.Tensor     # [1, L, D] prompt
    uncond: torch.Tensor   # [1, L, D] negative prompt ("" by default)


class FrozenDiffusion:
    """VAE + UNet + schedule + text encoder of one SD-layout model; no parameter ever requires grad."""

    def __init__(self, vae, unet, text_encoder, tokenizer, alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, image_size: int = 512, fast: bool = False,
                 compile: bool = False):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r} (epsilon or v_prediction)")
        if tokenizer is not None:            # None: text embeddings are set directly (the cost model)
            check_tokenizer(tokenizer, "the diffusion model's tokenizer")
        self.device = torch.device(device)
        self.dtype = dtype
        self.image_size = int(image_size)
        self.prediction_type = prediction_type
        self.vae_dtype = self.vae_dtype_for(vae.config, dtype)
        self.vae = _freeze(vae, self.device, self.vae_dtype)
        self.unet = _freeze(unet, self.device, dtype)
        self.text_encoder = _freeze(text_encoder, self.device, dtype) if text_encoder is not None else None
        self.tokenizer = tokenizer
        self.alphas_cumprod = alphas_cumprod.to(self.device, torch.float32)
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", None) or SD_SCALING_FACTOR)
        self._emb_cache: dict[str, torch.Tensor] = {}
        if fast:
            self._make_fast(compile)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_settings(cls, guidance_cfg, **load) -> "FrozenDiffusion":
        """Load from the guidance settings (guidance.model, guidance.text_encoder; another layout
        (trainables/frozen/layouts.py) reads its own as well)."""
        lora = tuple((spec.path, spec.scale, tuple(spec.components)) for spec in guidance_cfg.lora)
        return cls.from_ref(guidance_cfg.model, guidance_cfg.text_encoder, **load, lora=lora)

    @staticmethod
    def vae_dtype_for(vae_config, dtype: torch.dtype) -> torch.dtype:
        """The precision the VAE runs in: the model's (SDXL's override upcasts an fp16 VAE that overflows)."""
        return dtype

    @classmethod
    def from_ref(cls, model: str, text_encoder: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, image_size: int = 512, fast: bool = False,
                 compile: bool = False, lora: Sequence[tuple] = ()) -> "FrozenDiffusion":
        """Load from a diffusers directory or hub id; `text_encoder` = separate text encoder/tokenizer ref;
        `lora` = (file, scale[, components]) adapters fused into the UNet / text encoder (trainables/frozen/lora.py)."""
        # late: diffusers/transformers take ~5 s to import; importing trainables.guidance (every run) need not pay it
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from trainables.frozen.lora import apply_loras  # late: diffusers' LoRA loader (see above)

        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        own_text = text_encoder is None
        subs = ("unet", "vae", "scheduler") + (("text_encoder", "tokenizer") if own_text else ())
        root = resolve_diffusers_ref(model, subfolders=subs)
        te_dir = root / "text_encoder" if own_text else resolve_diffusers_ref(text_encoder, subfolders=("",))
        check_loras([entry[0] for entry in lora], root / "unet", te_dir)   # before any base weight loads
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype)
        if own_text:
            te_root, te_sub, tok_sub = root, "text_encoder", "tokenizer"
        else:
            te_root = resolve_diffusers_ref(text_encoder, subfolders=("",))
            te_sub = tok_sub = None
        te_kw = {"subfolder": te_sub} if te_sub else {}
        tok_kw = {"subfolder": tok_sub} if tok_sub else {}
        text = CLIPTextModel.from_pretrained(te_root, torch_dtype=dtype, **te_kw)
        tokenizer = CLIPTokenizer.from_pretrained(te_root, **tok_kw)
        check_tokenizer(tokenizer, f"{text_encoder or model} ({te_root})")
        apply_loras(unet, text, lora)
        alphas, pred = cls._read_schedule(Path(root))
        return cls(vae, unet, text, tokenizer, alphas, pred, device=device, dtype=dtype,
                   image_size=image_size, fast=fast, compile=compile)

    @staticmethod
    def _read_schedule(root: Path) -> tuple[torch.Tensor, str]:
        """alpha_bar_t and prediction type from scheduler/scheduler_config.json (SD defaults if absent)."""
        cfg_file = root / "scheduler" / "scheduler_config.json"
        if not cfg_file.is_file():
            return sd_alphas_cumprod(), "epsilon"
        from diffusers import DDPMScheduler  # late: see from_ref

        cfg = DDPMScheduler.load_config(root, subfolder="scheduler")
        keep = {k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                    "trained_betas", "prediction_type") if k in cfg}
        sched = DDPMScheduler.from_config(keep)
        return sched.alphas_cumprod.clone().float(), sched.config.prediction_type

    def _make_fast(self, compile: bool) -> None:
        try:  # PyTorch SDPA attention (diffusers' default on torch 2; set explicitly)
            from diffusers.models.attention_processor import AttnProcessor2_0  # late: see from_ref

            self.unet.set_attn_processor(AttnProcessor2_0())
            self.vae.set_attn_processor(AttnProcessor2_0())
        except Exception:  # pragma: no cover - older/newer diffusers
            pass
        if self.device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
        if compile:
            self.unet = torch.compile(self.unet)

    # ---------------------------------------------------------------- text
    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """[1, 77, D] last hidden state of the text encoder (model dtype), computed once per prompt."""
        if prompt not in self._emb_cache:
            ids = self.tokenizer([prompt], padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            self._emb_cache[prompt] = self.text_encoder(ids)[0]
        return self._emb_cache[prompt]

    def set_embedding(self, prompt: str, embedding: torch.Tensor) -> None:
        """Provide a prompt's embedding [1, 77, D] instead of computing it (models built without a text encoder)."""
        self._emb_cache[prompt] = embedding

    def text_embeddings(self, prompt: str, negative_prompt: str = "") -> TextEmbeddings:
        return TextEmbeddings(cond=self.embed(prompt), uncond=self.embed(negative_prompt))

    # ---------------------------------------------------------------- images and latents
    def prepare_images(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output -> VAE input: bilinear resize to image_size, clamp to [-1, 1] (differentiable)."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x.clamp(-1.0, 1.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x).latent_dist.mode() * scaling_factor; x already prepared ([-1,1], image_size). fp32 out."""
        z = self.vae.encode(x.to(self.vae_dtype)).latent_dist.mode()
        return z.float() * self.scaling_factor

    def alpha_bar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[int(t)]

    def add_noise(self, z: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """q(z_t | z): sqrt(a) z + sqrt(1 - a) eps."""
        a = self.alpha_bar(t)
        return a.sqrt() * z + (1.0 - a).sqrt() * eps

    # ---------------------------------------------------------------- noise prediction
    @torch.no_grad()
    def unet_eps(self, z_t: torch.Tensor, t: int, emb: torch.Tensor) -> torch.Tensor:
        """One UNet call on [N, C, h, w] with embeddings [N, L, D]; returns eps (v converted), fp32."""
        tt = torch.full((z_t.shape[0],), int(t), device=self.device, dtype=torch.long)
        out = self.unet(z_t.to(self.dtype), tt, **self.unet_conditioning(emb)).sample.float()
        if self.prediction_type == "v_prediction":
            out = self.v_to_eps(out, z_t, t)
        return out

    def unet_conditioning(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The UNet's text-conditioning keyword arguments for embeddings [N, L, D] (SD: the hidden states)."""
        return {"encoder_hidden_states": emb.to(self.dtype)}

    def embedding_shape(self) -> tuple[int, int, int]:
        """The shape of one prompt's embedding as `embed` returns it (what `set_embedding` must be given)."""
        return (1, 77, int(self.unet.config.cross_attention_dim))

    def v_to_eps(self, v: torch.Tensor, z_t: torch.Tensor, t: int) -> torch.Tensor:
        """eps = sqrt(a) v + sqrt(1 - a) z_t (v = sqrt(a) eps - sqrt(1 - a) z)."""
        a = self.alpha_bar(t)
        return a.sqrt() * v + (1.0 - a).sqrt() * z_t.float()

    @torch.no_grad()
    def predict_eps(self, z_t: torch.Tensor, t: int, cond_emb: torch.Tensor, uncond_emb: torch.Tensor,
                    cfg_scale: float) -> torch.Tensor:
        """CFG noise prediction eps_u + s (eps_c - eps_u) for every row of z_t, in ONE batched UNet call.

        z_t: [N, C, h, w]; cond_emb / uncond_emb: [1, L, D] (broadcast) or [N, L, D]. Returns fp32 [N, C, h, w].
        """
        n = z_t.shape[0]
        cond = cond_emb.expand(n, -1, -1) if cond_emb.shape[0] == 1 else cond_emb
        uncond = uncond_emb.expand(n, -1, -1) if uncond_emb.shape[0] == 1 else uncond_emb
        eps = self.unet_eps(torch.cat([z_t, z_t]), t, torch.cat([uncond, cond]))
        eps_u, eps_c = eps.chunk(2)
        return eps_u + cfg_scale * (eps_c - eps_u)
