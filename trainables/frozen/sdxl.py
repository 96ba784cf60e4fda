"""A frozen SDXL (StableDiffusionXLPipeline layout) as a noise predictor: FrozenDiffusion's SDXL layout.

What differs from SD 1.x/2.x (diffusers' StableDiffusionXLPipeline.encode_prompt and __call__):
  text      two encoders: text_encoder (CLIPTextModel) and text_encoder_2 (CLIPTextModelWithProjection), each
            with its own tokenizer; the UNet's context = concat(hidden_states[-2] of both) on the feature axis,
            the pooled embedding = text_encoder_2's projected `text_embeds`
  UNet      added_cond_kwargs {text_embeds: pooled, time_ids}, time_ids = original_size + crops_coords_top_left
            + target_size (guidance.sdxl, trainables/guidance/sdxl_settings.py)
  ""        with force_zeros_for_empty_prompt (model_index.json; the pipeline's default True) the empty prompt's
            context AND pooled embedding are zeros, as the pipeline's unconditional branch without a negative
            prompt (guidance.negative_prompt "" is that case)
  VAE       its own scaling factor (0.13025, from vae/config.json, as for SD); SDXL's VAE overflows in fp16: with
            force_upcast in its config an fp16 model runs the VAE in fp32 (the pipeline's upcast); the fp16-safe
            VAE madebyollin/sdxl-vae-fp16-fix (force_upcast false) runs in fp16 (docs/engine.md)

One prompt's embedding stays ONE tensor, so the engines (guidance/fusion.py), every score variant and the
regularizers batch, expand and concatenate it as they do SD's: [1, L + k, D], the L context rows followed by k
rows holding the pooled vector (P values, zero-padded to k * D; k = ceil(P / D), 1 for SDXL: P 1280 <= D 2048).
`unet_conditioning` unpacks it.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from trainables.devices import DTYPES
from trainables.errors import ModelNotFoundError
from trainables.frozen.diffusion_model import FrozenDiffusion, _freeze
from trainables.frozen.layouts import SDXL_SUBFOLDERS, model_index
from trainables.frozen.refs import hf_offline, resolve_diffusers_ref
from trainables.frozen.tokenizer import check_tokenizer

N_TIME_IDS = 6        # original_size (2) + crops_coords_top_left (2) + target_size (2)


def _no_separate_text_encoder(text_encoder: str | None, model: str) -> None:
    if text_encoder is not None:
        raise ValueError(f"guidance.text_encoder {text_encoder!r}: SDXL ({model}) uses its own two text encoders "
                         f"(text_encoder/, text_encoder_2/); set guidance.text_encoder: null")


class FrozenSDXL(FrozenDiffusion):
    """VAE + UNet + two text encoders + schedule of one SDXL; no parameter ever requires grad."""

    def __init__(self, vae, unet, text_encoder, tokenizer, alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, image_size: int = 1024, fast: bool = False,
                 compile: bool = False, *, text_encoder_2=None, tokenizer_2=None,
                 time_ids: tuple[int, ...] | None = None, force_zeros_for_empty_prompt: bool = True):
        cfg = unet.config
        if getattr(cfg, "addition_embed_type", None) != "text_time":
            raise ValueError(f"not an SDXL UNet: addition_embed_type {getattr(cfg, 'addition_embed_type', None)!r} "
                             "(SDXL's is 'text_time')")
        self.pooled_dim = int(cfg.projection_class_embeddings_input_dim) - N_TIME_IDS * int(cfg.addition_time_embed_dim)
        if text_encoder_2 is not None and int(text_encoder_2.config.projection_dim) != self.pooled_dim:
            raise ValueError(
                f"the UNet expects {cfg.projection_class_embeddings_input_dim} added-embedding inputs = pooled "
                f"({text_encoder_2.config.projection_dim}) + {N_TIME_IDS} time ids x {cfg.addition_time_embed_dim}: "
                "it does not (an SDXL refiner conditions on 5 time ids with an aesthetic score: not supported; "
                "use an SDXL base model)")
        if tokenizer_2 is not None:
            check_tokenizer(tokenizer_2, "the SDXL model's tokenizer_2")
        super().__init__(vae, unet, text_encoder, tokenizer, alphas_cumprod, prediction_type, device=device,
                         dtype=dtype, image_size=image_size, fast=fast, compile=compile)
        self.text_encoder_2 = (_freeze(text_encoder_2, self.device, dtype)
                               if text_encoder_2 is not None else None)
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
        self.context_dim = int(cfg.cross_attention_dim)
        self.context_length = int(getattr(tokenizer, "model_max_length", 77) or 77) if tokenizer is not None else 77
        self.pooled_rows = math.ceil(self.pooled_dim / self.context_dim)
        ids = time_ids if time_ids is not None else (self.image_size, self.image_size, 0, 0,
                                                     self.image_size, self.image_size)
        if len(ids) != N_TIME_IDS:
            raise ValueError(f"SDXL time_ids need {N_TIME_IDS} values (original_size + crops + target_size), "
                             f"got {tuple(ids)}")
        self.time_ids = torch.tensor([list(ids)], dtype=torch.float32, device=self.device)

    @staticmethod
    def vae_dtype_for(vae_config, dtype: torch.dtype) -> torch.dtype:
        """fp32 for an fp16 model whose VAE config says force_upcast (SDXL's VAE overflows in fp16)."""
        if dtype == torch.float16 and getattr(vae_config, "force_upcast", False):
            return torch.float32
        return dtype

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_settings(cls, guidance_cfg, **load) -> "FrozenSDXL":
        if guidance_cfg.lora:
            raise ValueError(f"guidance.lora: LoRA adapters are supported on SD 1.x/2.x critics; {guidance_cfg.model} "
                             f"is an SDXL model, for which adapter loading is not tested yet: remove guidance.lora "
                             f"or use an SD 1.x/2.x critic")
        image_size = load.get("image_size", guidance_cfg.image_size)
        return cls.from_ref(guidance_cfg.model, guidance_cfg.text_encoder,
                            time_ids=guidance_cfg.sdxl.time_ids(image_size), **load)

    @classmethod
    def from_ref(cls, model: str, text_encoder: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, image_size: int = 1024, fast: bool = False,
                 compile: bool = False, time_ids: tuple[int, ...] | None = None) -> "FrozenSDXL":
        """Load an SDXL diffusers folder / hub id, or a single-file checkpoint (.safetensors / .ckpt)."""
        # late: diffusers/transformers take ~5 s to import (as FrozenDiffusion.from_ref)
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        _no_separate_text_encoder(text_encoder, model)
        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        kw = dict(device=device, dtype=dtype, image_size=image_size, fast=fast, compile=compile, time_ids=time_ids)
        if Path(model).expanduser().is_file():
            return cls.from_single_file(Path(model).expanduser(), **kw)
        root = resolve_diffusers_ref(model, subfolders=SDXL_SUBFOLDERS)
        nets = dict(
            vae=AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype),
            unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype),
            text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder", torch_dtype=dtype),
            tokenizer=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            text_encoder_2=CLIPTextModelWithProjection.from_pretrained(root, subfolder="text_encoder_2",
                                                                       torch_dtype=dtype),
            tokenizer_2=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer_2"))
        check_tokenizer(nets["tokenizer"], f"{model} ({root / 'tokenizer'})")
        check_tokenizer(nets["tokenizer_2"], f"{model} ({root / 'tokenizer_2'})")
        alphas, pred = cls._read_schedule(Path(root))
        zeros = bool(model_index(root).get("force_zeros_for_empty_prompt", True))   # the pipeline's default
        return cls._build(nets, alphas, pred, zeros, **kw)

    @classmethod
    def _build(cls, nets: dict, alphas, pred, zeros: bool, *, time_ids, **kw) -> "FrozenSDXL":
        return cls(nets["vae"], nets["unet"], nets["text_encoder"], nets["tokenizer"], alphas, pred,
                   text_encoder_2=nets["text_encoder_2"], tokenizer_2=nets["tokenizer_2"], time_ids=time_ids,
                   force_zeros_for_empty_prompt=zeros, **kw)

    @classmethod
    def from_single_file(cls, path: Path, **kw) -> "FrozenSDXL":
        """A single-file SDXL checkpoint through diffusers' from_single_file, which needs the SDXL pipeline's
        configs (from the Hugging Face cache, or downloaded): offline without them, a ModelNotFoundError saying
        how to get them."""
        from diffusers import StableDiffusionXLPipeline  # late: see from_ref

        dtype = kw["dtype"]
        try:
            pipe = StableDiffusionXLPipeline.from_single_file(str(path), torch_dtype=dtype,
                                                              local_files_only=hf_offline())
        except Exception as exc:    # config fetch offline, unknown key layout, corrupt file
            raise ModelNotFoundError(
                f"guidance.model {str(path)!r}: diffusers could not build an SDXL pipeline from this single file "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).\n"
                "  diffusers needs the SDXL pipeline's configs (not its weights) for a single file: run once online, "
                "or `hf download stabilityai/stable-diffusion-xl-base-1.0 --include '*.json' '*.txt'` into the "
                "cache, or convert the file to a diffusers folder (StableDiffusionXLPipeline.from_single_file(...)"
                ".save_pretrained(dir)) and point guidance.model at that folder") from exc
        nets = dict(vae=pipe.vae, unet=pipe.unet, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                    text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)
        sched = pipe.scheduler.config
        from diffusers import DDPMScheduler  # late: see from_ref

        keep = {k: sched[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                      "trained_betas", "prediction_type") if k in sched}
        ddpm = DDPMScheduler.from_config(keep)
        zeros = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
        return cls._build(nets, ddpm.alphas_cumprod.clone().float(), ddpm.config.prediction_type, zeros, **kw)

    # ---------------------------------------------------------------- text
    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """[1, L + k, D]: concat(hidden_states[-2] of both encoders) and the pooled rows (module docstring)."""
        if prompt not in self._emb_cache:
            hidden, pooled = [], None
            for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
                ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
                          return_tensors="pt").input_ids.to(self.device)
                out = enc(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2])
                pooled = getattr(out, "text_embeds", pooled)     # text_encoder_2's projected pooled output
            context = torch.cat(hidden, dim=-1)
            if prompt == "" and self.force_zeros_for_empty_prompt:   # the pipeline's unconditional branch
                context, pooled = torch.zeros_like(context), torch.zeros_like(pooled)
            self._emb_cache[prompt] = self.pack(context, pooled)
        return self._emb_cache[prompt]

    def pack(self, context: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """[N, L, D] context + [N, P] pooled -> [N, L + k, D] (pooled zero-padded to k * D)."""
        n = context.shape[0]
        rows = pooled.new_zeros(n, self.pooled_rows * self.context_dim)
        rows[:, : self.pooled_dim] = pooled
        return torch.cat([context, rows.view(n, self.pooled_rows, self.context_dim).to(context.dtype)], dim=1)

    def unpack(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, L + k, D] -> ([N, L, D] context, [N, P] pooled)."""
        n = emb.shape[0]
        return emb[:, : -self.pooled_rows], emb[:, -self.pooled_rows:].reshape(n, -1)[:, : self.pooled_dim]

    def embedding_shape(self) -> tuple[int, int, int]:
        return (1, self.context_length + self.pooled_rows, self.context_dim)

    # ---------------------------------------------------------------- noise prediction
    def unet_conditioning(self, emb: torch.Tensor) -> dict:
        """encoder_hidden_states + added_cond_kwargs {text_embeds, time_ids} (one time_ids row per sample)."""
        context, pooled = self.unpack(emb)
        time_ids = self.time_ids.to(self.dtype).expand(emb.shape[0], -1)
        return {"encoder_hidden_states": context.to(self.dtype),
                "added_cond_kwargs": {"text_embeds": pooled.to(self.dtype), "time_ids": time_ids}}

