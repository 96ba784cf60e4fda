"""StyleGAN-NADA's critic: the directional CLIP loss (and the global CLIP loss for layer selection).

    (9)  dT = normalise( mean_templates normalise(E_txt(target)) - mean_templates normalise(E_txt(source)) )
    (10) dI = normalise( normalise(E_img(G_train(w))) - normalise(E_img(G_frozen(w))) )
    (11) L_dir = sum_k weight_k * mean_batch (1 - cos(dI_k, dT_k))          over CLIP models k
    (12) L_global = sum_k weight_k * mean_batch (1 - cos(normalise(E_img(G_train(w))), normalise(E_txt(target))))
Images go through NADA's differentiable preprocessing ([-1,1] -> [0,1], CLIP resize, centre crop,
normalise), after an optional bilinear resize to `nada.image_size` and a clamp to [-1, 1] (the Fusion
authors' generator wrapper does this at 512 before CLIP sees an image; StyleGAN-NADA's own code does not). L is a real scalar loss; it is backpropagated through `inject_gradient` like every other
guidance gradient. Templates: NADA's 79 ImageNet templates = open_clip's OpenAI list without
'a photo of many {}.'.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trainables.frozen.clip_models import LoadedClip, cached_open_clip
from trainables.devices import DTYPES
from trainables.guidance.fusion import inject_gradient

if TYPE_CHECKING:
    from trainables.config import NadaConfig

_NOT_IN_NADA = "a photo of many {}."


def imagenet_templates() -> list[str]:
    """NADA's 79 ImageNet templates (format strings with one '{}')."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # late: open_clip ~4 s; see clip_models.py

    out = [f("{}") for f in OPENAI_IMAGENET_TEMPLATES]
    out = [t for t in out if t != _NOT_IN_NADA]
    assert len(out) == 79, f"expected NADA's 79 ImageNet templates, got {len(out)}"
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def clip_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The dtype NADA's CLIP runs in: "auto" is fp16 on CUDA and fp32 elsewhere (what OpenAI's `clip.load` gives
    the authors' NADA: fp16 weights on the GPU, `model.float()` on the CPU); else the named precision."""
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return DTYPES[precision]


class NadaGuidance:
    """Directional CLIP loss over one or more open_clip models (same API as FusionGuidance)."""

    default_lr = 0.002 * 0.8         # train.py: lr 0.002 x g_reg_ratio 0.8
    trainable_set = "nada"           # const, conv1 and every conv, whole (generators/groups.py::nada_training_layers)
    needs_frozen = True              # the image direction is E(x_train) - E(x_frozen)
    selection_needs_frozen = False   # layer selection's global CLIP loss reads the trained render only

    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu") -> "NadaGuidance":
        return cls(cfg.nada, device)

    def __init__(self, nada_cfg: "NadaConfig", device: str | torch.device = "cpu",
                 dtype: torch.dtype | str | None = None, *,
                 models: list[tuple[LoadedClip, float]] | None = None):
        self.cfg = nada_cfg
        self.device = torch.device(device)
        if dtype is None:
            dtype = clip_dtype(nada_cfg.precision, self.device)
        elif isinstance(dtype, str):
            dtype = DTYPES[dtype]
        self.dtype = dtype
        if models is None:
            models = [(cached_open_clip(ref.name, ref.pretrained, device=self.device, dtype=dtype), ref.weight)
                      for ref in nada_cfg.clip_models]
        self.models = models
        names = [m.name for m, _ in models]
        self.keys = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]
        self._dirs: list[torch.Tensor] | None = None
        self._targets: list[torch.Tensor] | None = None
        self.prompt: str | None = None
        self.source_prompt: str | None = None
        # NADA's check for an exactly zero image direction (a host read each step); the cost model turns it off
        self.nudge_identical = True

    # -------------------------------------------------------------- API
    def templates(self) -> list[str]:
        return imagenet_templates() if self.cfg.templates == "imagenet" else ["{}"]

    @torch.no_grad()
    def text_features(self, clip: LoadedClip, text: str) -> torch.Tensor:
        """mean over templates of normalised text embeddings, [1, D] fp32 (not renormalised)."""
        emb = clip.encode_text([t.format(text) for t in self.templates()]).float()
        return _normalise(emb).mean(dim=0, keepdim=True)

    def prepare(self, prompt: str, source_prompt: str | None = "photo") -> None:
        """Text directions dT (eq. 9) and global target embeddings, once."""
        self.prompt, self.source_prompt = prompt, source_prompt or "photo"
        self._dirs, self._targets = [], []
        for clip, _ in self.models:
            d = self.text_features(clip, prompt) - self.text_features(clip, self.source_prompt)
            self._dirs.append(_normalise(d))
            with torch.no_grad():
                self._targets.append(_normalise(clip.encode_text([prompt]).float()))

    def sample_timestep(self, rng: torch.Generator | None = None) -> int:
        return 0   # CLIP guidance has no timestep

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output -> what CLIP's preprocessing receives: resized to nada.image_size and clamped, or as is."""
        images = images.to(self.device)
        if self.cfg.image_size is None:
            return images
        size = (self.cfg.image_size, self.cfg.image_size)
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False).clamp(-1, 1)

    def image_features(self, clip: LoadedClip, images: torch.Tensor) -> torch.Tensor:
        return _normalise(clip.encode_image(self.prepare_images(images)).float())

    def directional_losses(self, x_train: torch.Tensor, x_frozen: torch.Tensor) -> list[torch.Tensor]:
        """Per-model 1 - cos(dI, dT), batch-mean (eqs. 10-11), unweighted, differentiable in x_train."""
        self._check_prepared()
        out = []
        for (clip, _), d_t in zip(self.models, self._dirs):
            with torch.no_grad():
                f_src = self.image_features(clip, x_frozen)
            f_tgt = self.image_features(clip, x_train)
            d_i = f_tgt - f_src
            if self.nudge_identical and d_i.sum() == 0:  # identical images (step 0): NADA nudges the input
                d_i = self.image_features(clip, x_train + 1e-6) - f_src
            d_i = _normalise(d_i)
            out.append((1.0 - F.cosine_similarity(d_i, d_t, dim=-1)).mean())
        return out

    def global_losses(self, x_train: torch.Tensor) -> list[torch.Tensor]:
        """Per-model 1 - cos(E_img(x), E_txt(target)) batch-mean (eq. 12)."""
        self._check_prepared()
        return [(1.0 - (self.image_features(clip, x_train) * tgt).sum(-1)).mean()
                for (clip, _), tgt in zip(self.models, self._targets)]

    def backward(self, x_train: torch.Tensor, x_frozen: torch.Tensor, t: int = 0,
                 rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        losses = self.directional_losses(x_train, x_frozen)
        total = sum(w * l for (_, w), l in zip(self.models, losses))
        inject_gradient(total)
        metrics = {"loss/clip_directional": total.detach()}       # device tensors: no host read in a step
        metrics.update({f"loss/clip_directional/{k}": l.detach() for k, l in zip(self.keys, losses)})
        return metrics

    def selection_backward(self, x_train: torch.Tensor, x_frozen: torch.Tensor | None = None, t: int = 0,
                           rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        losses = self.global_losses(x_train)
        total = sum(w * l for (_, w), l in zip(self.models, losses))
        inject_gradient(total)
        metrics = {"loss/clip_global": total.detach()}
        metrics.update({f"loss/clip_global/{k}": l.detach() for k, l in zip(self.keys, losses)})
        return metrics

    def _check_prepared(self) -> None:
        if self._dirs is None:
            raise RuntimeError("call prepare(prompt, source_prompt) before computing the CLIP loss")
