"""StyleGAN-NADA's settings (`nada`): the directional CLIP critic. Torch-free; read by trainables/guidance/nada.py."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainables.settings import StrictModel

NADA_CLIP_SIDE = 224   # NADA's images go through CLIP at 224 px when nada.image_size is None


class ClipModelRef(StrictModel):
    name: str = "ViT-B-32"          # open_clip model name (or a registered custom config)
    pretrained: str = "openai"      # open_clip tag or a local state-dict path
    weight: float = Field(1.0, ge=0)


class NadaConfig(StrictModel):
    """StyleGAN-NADA's critic: directional CLIP loss."""

    clip_models: list[ClipModelRef] = Field(
        default_factory=lambda: [ClipModelRef(name="ViT-B-32"), ClipModelRef(name="ViT-B-16")], min_length=1
    )
    templates: Literal["imagenet", "none"] = "imagenet"  # 79 ImageNet templates (open_clip ships them)
    # generator output resized (bilinear) to this side and clamped to [-1, 1] before CLIP's own preprocessing;
    # None = the raw output (StyleGAN-NADA's code). The Fusion authors' NADA run resizes to 512 (their
    # SG2Generator.forward), see docs/fidelity.md.
    image_size: int | None = Field(None, ge=8)
    # "auto" = the authors' NADA: OpenAI's `clip.load(..., device='cuda:0')` keeps CLIP's fp16 weights on a GPU and
    # converts them to fp32 on the CPU (criteria/clip_loss.py:37; docs/fidelity.md); or a fixed precision
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"



class Nada:
    """The declaration of method 'nada' (trainables/registry.py): its settings and where they live."""

    name = "nada"
    label = "NADA"             # how the comparison table names it
    settings_key = "nada"
    Settings = NadaConfig

    @staticmethod
    def critic_side(cfg) -> int:
        """The side its critic sees images at (trainables/resources.py bounds batches by it)."""
        return cfg.nada.image_size or NADA_CLIP_SIDE

    @staticmethod
    def model_refs(cfg) -> list[tuple[str, str, object]]:
        """(config field, reference type, reference) of every frozen model a run needs (trainables/preflight.py)."""
        return [(f"nada.clip_models.{i}", "open_clip", (ref.name, ref.pretrained))
                for i, ref in enumerate(cfg.nada.clip_models)]

    @staticmethod
    def models_label(cfg) -> str:
        """Its frozen models in one line (the trial's `guidance_model` tag)."""
        return ",".join(f"{m.name}/{m.pretrained}" for m in cfg.nada.clip_models)
