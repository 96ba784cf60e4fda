"""Tiny stand-in models for tests and benchmarks (milliseconds on a CPU, random weights, offline).

    build_tiny_sd(dir)          -> a diffusers Stable-Diffusion-layout directory (loaded by the same code
                                   path as CompVis/stable-diffusion-v1-4)
    build_tiny_sdxl(dir)        -> the same for SDXL (loaded as stabilityai/stable-diffusion-xl-base-1.0)
    build_tiny_open_clip(dir)   -> (config_json, weights) for `load_open_clip(config_json, weights)`

Random weights: these test plumbing and arithmetic, never image quality.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trainables.frozen.tokenizer import build_clip_tokenizer

# SD 1.x/2.x noise schedule: scaled_linear betas 0.00085..0.012 over 1000 steps.
SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SD_VAE_SCALING = 0.18215
TINY_TEXT_DIM = 32
TINY_CLIP_NAME = "TinyCLIP-test"


def tiny_unet_config(cross_attention_dim: int = TINY_TEXT_DIM, sample_size: int = 8) -> dict:
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )


def tiny_vae_config(sample_size: int = 16) -> dict:
    # two blocks -> downsampling factor 2 (SD's four blocks give 8)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=sample_size,
        block_out_channels=(32, 64), norm_num_groups=32, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        scaling_factor=SD_VAE_SCALING,
    )


def tiny_text_config(hidden_size: int = TINY_TEXT_DIM) -> dict:
    return dict(vocab_size=49408, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def build_tiny_sd(dir: str | Path, seed: int = 0, prediction_type: str = "epsilon",
                  scheduler: str = "ddpm", text_dim: int = TINY_TEXT_DIM) -> Path:
    """Write a tiny SD-layout pipeline directory (model_index.json, vae/, unet/, text_encoder/, tokenizer/,
    scheduler/); returns its path. `scheduler`: 'ddpm' or 'pndm' (both with SD's betas)."""
    # late: conftest imports this module; diffusers/transformers/open_clip add ~2-5 s each at import
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config(cross_attention_dim=text_dim))
    vae = AutoencoderKL(**tiny_vae_config())
    text = CLIPTextModel(CLIPTextConfig(**tiny_text_config(text_dim)))
    if scheduler == "ddpm":
        sched = DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type, clip_sample=False)
    elif scheduler == "pndm":
        sched = PNDMScheduler(**SD_SCHEDULE, prediction_type=prediction_type, skip_prk_steps=True)
    else:
        raise ValueError(f"scheduler must be 'ddpm' or 'pndm', got {scheduler!r}")
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    sched.save_pretrained(root / "scheduler")
    build_clip_tokenizer(root / "tokenizer")
    import diffusers  # late: see the diffusers import above

    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(sched).__name__],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


# tiny SDXL (StableDiffusionXLPipeline layout): two text encoders whose penultimate hidden states concatenate to
# the UNet's context (TINY_TEXT_DIM + TINY_TEXT_DIM), text_encoder_2's projection is the pooled embedding
TINY_SDXL_POOLED = 16
TINY_SDXL_TIME_DIM = 8          # addition_time_embed_dim: 6 time ids x 8 + pooled 16 = 64 added-embedding inputs
SDXL_VAE_SCALING = 0.13025


def tiny_sdxl_unet_config(sample_size: int = 8) -> dict:
    return dict(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), use_linear_projection=True,
        cross_attention_dim=2 * TINY_TEXT_DIM, addition_embed_type="text_time",
        addition_time_embed_dim=TINY_SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=TINY_SDXL_POOLED + 6 * TINY_SDXL_TIME_DIM,
    )


def build_tiny_sdxl(dir: str | Path, seed: int = 0, force_zeros_for_empty_prompt: bool = True) -> Path:
    """Write a tiny SDXL-layout pipeline directory (model_index.json, vae/, unet/, text_encoder/, tokenizer/,
    text_encoder_2/, tokenizer_2/, scheduler/), as StableDiffusionXLPipeline.save_pretrained lays it out; random
    weights. The VAE config carries SDXL's scaling factor and force_upcast."""
    # late: conftest imports this module; diffusers/transformers add ~2-5 s each at import
    import diffusers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_sdxl_unet_config())
    vae = AutoencoderKL(**{**tiny_vae_config(), "scaling_factor": SDXL_VAE_SCALING, "force_upcast": True})
    text = CLIPTextModel(CLIPTextConfig(**tiny_text_config()))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**tiny_text_config(), "projection_dim": TINY_SDXL_POOLED,
                                                           "hidden_act": "gelu"}))
    sched = EulerDiscreteScheduler(**SD_SCHEDULE, prediction_type="epsilon", timestep_spacing="leading",
                                   steps_offset=1)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    text_2.save_pretrained(root / "text_encoder_2")
    sched.save_pretrained(root / "scheduler")
    build_clip_tokenizer(root / "tokenizer")
    build_clip_tokenizer(root / "tokenizer_2", pad_token="!")        # SDXL's tokenizer_2 pads with "!"
    index = {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "force_zeros_for_empty_prompt": force_zeros_for_empty_prompt,
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def build_tiny_text_encoder(dir: str | Path, seed: int = 0, hidden_size: int = TINY_TEXT_DIM) -> Path:
    """A standalone CLIP text encoder + tokenizer directory (like openai/clip-vit-large-patch14)."""
    # late: conftest imports this module; transformers' CLIPTextModel adds ~2 s at import
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(dir)
    torch.manual_seed(seed)
    CLIPTextModel(CLIPTextConfig(**tiny_text_config(hidden_size))).save_pretrained(root)
    build_clip_tokenizer(root)
    return root


def tiny_open_clip_config(image_size: int = 32) -> dict:
    return {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": {"image_size": image_size, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def build_tiny_open_clip(dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny open_clip ViT: `<dir>/TinyCLIP-test.json` (registered by its stem) + random weights."""
    import open_clip  # late: conftest imports this module; open_clip adds ~4 s at import

    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = root / f"{TINY_CLIP_NAME}.json"
    cfg_path.write_text(json.dumps(tiny_open_clip_config(), indent=2))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None, pretrained_text=False)
    weights = root / "tiny_open_clip.pt"
    torch.save(model.state_dict(), weights)
    return cfg_path, weights
