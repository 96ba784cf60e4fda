"""StyleGAN-Fusion's critic: score distillation from Stable Diffusion, plus its regularizers.

Equations (docs/engine.md numbers them; ../shared/paper.md "Score distillation" and "Regularizers"):
    (1) z = E(x).mode() * scaling_factor, x = clamp(bilinear_resize(G_train(w), image_size), -1, 1)
    (2) z_t = sqrt(a_t) z + sqrt(1 - a_t) eps,  eps ~ N(0, I),  a_t = alpha_bar_t
    (3) eps_hat_cfg = eps_u + s (eps_c - eps_u)
    (4) grad_z = nan_to_num(clamp(w(t) d * grad_scale, -c, c)),  w(t) = 1 - a_t | 1,
        d = eps_hat_cfg - eps (paper SDS) or a later variant's direction (guidance.variant, guidance/variants/)
    (5) image clamp: g_x = (dz/dx)^T grad_z, clamped per sample to +-quantile_q(|g_x|)
    (6) directional: g = clamp((1 - a_t) (eps_hat(z_t_train) - eps_hat(z_t_frozen)) * weight * grad_scale)
    (7) reconstruction: x0 = (z_t - sqrt(1-a) e) / sqrt(a), g_e = d MSE(x0, z_frozen) / d e,
        g = clamp((1 - a_t) (rescale(e) - rescale(g_e)) * weight * grad_scale)
    (8) LPIPS: d/dx [LPIPS(x_frozen, x_train) * scale * weight * grad_scale]
Nothing is minimised through the UNet: gradients (4)-(7) are injected with `inject_gradient`, the one
place where this module calls `.backward`. The logged "loss/sds_mse" is mean((eps_hat - eps)^2): an
honest diagnostic, not the objective whose gradient is applied. Metrics are detached 0-dim tensors on the
device: nothing in a step reads a value back to the host (the loop does, when it delivers them).

Two engines, one meaning (docs/engine.md):
    reference  the paper code's pass structure in fp32: separate VAE encodes (SDS, image-clamp re-encode,
               regularizer encodes of train and frozen), one UNet call per prediction group, one backward
               through the generator per term.
    fast       one VAE encode per image (train rows with graph, frozen rows without), one UNet call for
               every prediction of the step, all terms summed at the image and ONE backward through the
               generator; configured precision.
"""
from __future__ import annotations

import torch

from trainables.frozen import model_cache
from trainables.config import DiffusionGuidanceConfig, RegularizerConfig
from trainables.devices import DTYPES
from trainables.registry import SCORE_VARIANTS
from trainables.frozen.diffusion_model import FrozenDiffusion
from trainables.frozen.layouts import load_frozen_diffusion
from trainables.frozen.lora_check import lora_key
from trainables.guidance.lpips_reg import LpipsRegularizer
from trainables.guidance.variants.base import FROZEN, PROMPT_ORDER, TARGET, TRAIN, UNCOND, Predictions, Row, guided, rescale_noise

REG_TRAIN, REG_FROZEN = "reg_train", "reg_frozen"   # the regularizers' latents (their own eps2)


# ------------------------------------------------------------------ the one injection point
def inject_gradient(tensor: torch.Tensor, grad: torch.Tensor | None = None, retain_graph: bool = False) -> None:
    """Backpropagate `grad` (dL/d tensor of an implicit objective) from `tensor` into the generator.

    `grad=None` means `tensor` is a real scalar loss (LPIPS) and is differentiated as such.
    """
    if grad is None:
        tensor.backward(retain_graph=retain_graph)
    else:
        tensor.backward(gradient=grad.to(tensor.dtype), retain_graph=retain_graph)


# ------------------------------------------------------------------ pure pieces (shared by engines and tests)
def sds_weight(alpha_bar: torch.Tensor, weighting: str) -> torch.Tensor:
    """w(t) of eq. (4): 'sds' = 1 - alpha_bar_t, 'uniform' = 1."""
    if weighting == "sds":
        return 1.0 - alpha_bar
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    raise ValueError(f"unknown weighting {weighting!r}")


def clamp_latent_grad(g: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """clamp to [-c, c] (None = off), then nan_to_num, in the paper code's order."""
    if clamp is not None:
        g = g.clamp(-clamp, clamp)
    return torch.nan_to_num(g)


def quantile_clamp(g: torch.Tensor, q: float) -> torch.Tensor:
    """Eq. (5): clamp each sample's gradient to +-(q-quantile of its |values|)."""
    lim = torch.quantile(g.detach().flatten(1).abs().float(), q, dim=1).to(g.dtype)
    lim = lim.view(-1, *([1] * (g.dim() - 1)))
    return torch.minimum(torch.maximum(g, -lim), lim)


def score_latent_grad(direction: torch.Tensor, w: torch.Tensor, clamp: float | None,
                      grad_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (4) for any score variant's direction d (SDS: eps_hat_cfg - eps) -> (grad_z, mean(d^2)).
    grad_scale acts before the clamp, as the paper's EG3D /100."""
    return clamp_latent_grad(w * direction * grad_scale, clamp), direction.pow(2).mean().detach()


def directional_latent_grad(eps_hat_train: torch.Tensor, eps_hat_frozen: torch.Tensor, a: torch.Tensor,
                            weight: float, clamp: float | None, grad_scale: float = 1.0,
                            rescale: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6) -> (grad at z_train, mean(diff^2))."""
    if rescale:
        eps_hat_train, eps_hat_frozen = rescale_noise(eps_hat_train), rescale_noise(eps_hat_frozen)
    diff = eps_hat_train - eps_hat_frozen
    return clamp_latent_grad((1.0 - a) * diff * weight * grad_scale, clamp), diff.pow(2).mean().detach()


def reconstruction_latent_grad(e: torch.Tensor, z_t: torch.Tensor, z_frozen: torch.Tensor, a: torch.Tensor,
                               weight: float, clamp: float | None,
                               grad_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (7) -> (grad at z_train, mean(diff^2), MSE(x0_hat, z_frozen))."""
    e = e.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        x0 = (z_t.detach() - (1.0 - a).sqrt() * e) / a.sqrt()
        mse = torch.nn.functional.mse_loss(x0, z_frozen.detach())
        (g_e,) = torch.autograd.grad(mse, e)
    diff = rescale_noise(e.detach()) - rescale_noise(g_e)
    return (clamp_latent_grad((1.0 - a) * diff * weight * grad_scale, clamp), diff.pow(2).mean().detach(),
            mse.detach())


def _prompt_texts(variant, prompt: str, source_prompt: str | None) -> dict[str, str]:
    """Prompt key -> text for a run: the target and CFG's unconditional text (the regularizers read both), then
    whatever the variant adds (its source or negative prompt)."""
    return {TARGET: prompt, UNCOND: variant.cfg.negative_prompt, **variant.texts(prompt, source_prompt)}


# ------------------------------------------------------------------ the guidance object
class FusionGuidance:
    """Score distillation guidance (+ directional / reconstruction / LPIPS regularizers).

    guide = FusionGuidance(cfg.guidance, cfg.reg, device)
    guide.prepare(prompt, source_prompt)
    t = guide.sample_timestep(rng)
    metrics = guide.backward(x_train, x_frozen, t, rng)          # SDS + regularizers, injected
    metrics = guide.selection_backward(x_train, x_frozen, t, rng)  # SDS alone (layer selection)

    `model` / `lpips` may be passed in (tests, benchmarks, sharing one model between objects).
    """

    default_lr = 0.002 / 2 * 0.8     # train.py: lr 0.002, halved for diffusion, x g_reg_ratio 0.8
    trainable_set = "fusion"         # the styled convs' weights (generators/groups.py::fusion_trainable_names)

    @classmethod
    def from_config(cls, cfg, device: str | torch.device = "cpu") -> "FusionGuidance":
        return cls(cfg.guidance, cfg.reg, device, compile=cfg.guidance.compile and cfg.guidance.engine == "fast")

    def __init__(self, guidance_cfg: "DiffusionGuidanceConfig", reg_cfg: "RegularizerConfig | None" = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None, *,
                 model: FrozenDiffusion | None = None, lpips: "LpipsRegularizer | None" = None,
                 compile: bool = False):
        self.cfg = guidance_cfg
        self.reg = reg_cfg if reg_cfg is not None else RegularizerConfig()
        self.device = torch.device(device)
        self.engine = guidance_cfg.engine
        if dtype is None:
            dtype = DTYPES[guidance_cfg.precision]
        elif isinstance(dtype, str):
            dtype = DTYPES[dtype]
        if self.engine == "reference":
            dtype = torch.float32                     # the paper's arithmetic: fp32 throughout
        self.dtype = dtype
        load = dict(device=self.device, dtype=dtype, image_size=guidance_cfg.image_size,
                    fast=self.engine == "fast", compile=compile)
        lora = tuple((spec.path, spec.scale, tuple(spec.components)) for spec in guidance_cfg.lora)
        self.model = model if model is not None else model_cache.cached(    # off unless a sweep trial
            "diffusion", lambda: load_frozen_diffusion(guidance_cfg, **load),
            refs=(guidance_cfg.model, guidance_cfg.text_encoder),
            sdxl_time_ids=guidance_cfg.sdxl.time_ids(guidance_cfg.image_size), **load, lora=lora_key(lora))
        if self.engine == "reference" and self.model.dtype != torch.float32:
            raise ValueError("the reference engine runs in fp32; pass an fp32 FrozenDiffusion")
        self.variant = SCORE_VARIANTS.load(guidance_cfg.variant)(guidance_cfg)
        self._lpips = lpips
        if self.reg.lpips.weight > 0 and self._lpips is None:
            self._lpips = LpipsRegularizer(self.reg.lpips.net, device=self.device)
        self.prompt: str | None = None
        self.source_prompt: str | None = None
        self._cond: torch.Tensor | None = None
        self._uncond: torch.Tensor | None = None
        self._emb: dict[str, torch.Tensor] = {}

    # -------------------------------------------------------------- API
    @staticmethod
    def texts(guidance_cfg: "DiffusionGuidanceConfig", prompt: str, source_prompt: str | None) -> list[str]:
        """Every text this guidance embeds for a run (its variant's prompts; the regularizers read prompt and
        guidance.negative_prompt), e.g. to provide embeddings to a model built without a text encoder."""
        variant = SCORE_VARIANTS.load(guidance_cfg.variant)(guidance_cfg)
        return list(dict.fromkeys(_prompt_texts(variant, prompt, source_prompt).values()))

    def prepare(self, prompt: str, source_prompt: str | None = None) -> None:
        """Text embeddings once per prompt: cond = prompt, uncond = cfg.negative_prompt, and the variant's own
        (source or negative prompt)."""
        self.prompt, self.source_prompt = prompt, source_prompt
        texts = _prompt_texts(self.variant, prompt, source_prompt)
        self._emb = {key: self.model.embed(text) for key, text in texts.items()}
        self._cond, self._uncond = self._emb[TARGET], self._emb[UNCOND]

    def sample_timestep(self, rng: torch.Generator | None = None) -> int:
        """t ~ U{t_min, ..., t_max} (inclusive)."""
        dev = rng.device if rng is not None else "cpu"
        return int(torch.randint(self.cfg.t_min, self.cfg.t_max + 1, (1,), generator=rng, device=dev).item())

    def backward(self, x_train: torch.Tensor, x_frozen: torch.Tensor, t: int,
                 rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self._step(x_train, x_frozen, int(t), rng, sds_only=False)

    def selection_backward(self, x_train: torch.Tensor, x_frozen: torch.Tensor | None, t: int,
                           rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The score-distillation gradient alone (with the image clamp), as the paper's layer selection uses it
        (x_frozen: the frozen render, read only by variants that need it: `selection_needs_frozen`)."""
        return self._step(x_train, x_frozen, int(t), rng, sds_only=True)

    # -------------------------------------------------------------- internals
    @property
    def needs_frozen(self) -> bool:
        """Whether `backward` reads the frozen generator's render (the regularizers and the DDS variant do)."""
        return self.variant.needs_frozen or self.uses_directional or self.uses_reconstruction or self.uses_lpips

    @property
    def selection_needs_frozen(self) -> bool:
        """Whether `selection_backward` reads the frozen render (the DDS variant's source branch)."""
        return self.variant.needs_frozen

    @property
    def uses_directional(self) -> bool:
        return self.reg.directional.weight > 0

    @property
    def uses_reconstruction(self) -> bool:
        return self.reg.reconstruction.weight > 0

    @property
    def uses_lpips(self) -> bool:
        return self.reg.lpips.weight > 0

    @property
    def lpips_factor(self) -> float:
        """What multiplies LPIPS in the objective: scale (2000) x weight x grad_scale (EG3D: 0.01 -> 20 x weight)."""
        return self.reg.lpips.scale * self.reg.lpips.weight * self.cfg.grad_scale

    def _noise(self, shape: torch.Size, rng: torch.Generator | None) -> torch.Tensor:
        dev = rng.device if rng is not None else self.device
        return torch.randn(shape, generator=rng, device=dev, dtype=torch.float32).to(self.device)

    def _step(self, x_train, x_frozen, t, rng, sds_only) -> dict[str, torch.Tensor]:
        if self._cond is None:
            raise RuntimeError("call prepare(prompt, source_prompt) before backward()")
        if not x_train.requires_grad:
            raise ValueError("x_train must require grad (its graph must reach the trainable generator)")
        if not 0 <= t < self.model.alphas_cumprod.shape[0]:
            raise ValueError(f"timestep {t} outside the schedule")
        x_train = x_train.to(self.device)
        if x_frozen is not None:
            x_frozen = x_frozen.to(self.device).detach()
        do_reg = not sds_only and (self.uses_directional or self.uses_reconstruction)
        do_lpips = not sds_only and self.uses_lpips
        if x_frozen is None and (do_reg or do_lpips or self.variant.needs_frozen):
            readers = ([f"variant {self.variant.name!r}"] if self.variant.needs_frozen else []) + \
                      (["the regularizers"] if do_reg or do_lpips else [])
            raise ValueError(f"{' and '.join(readers)} read the frozen render: pass x_frozen")
        fn = self._step_reference if self.engine == "reference" else self._step_fast
        metrics = fn(x_train, x_frozen, t, rng, do_reg, do_lpips)
        a = self.model.alpha_bar(t)
        metrics.update({"sds/t": torch.tensor(float(t)), "sds/w": sds_weight(a, self.cfg.weighting).detach()})
        return metrics

    def _predict(self, latents: dict[str, torch.Tensor], rows: list[Row], t: int) -> Predictions:
        """The UNet's prediction for every (latent, prompt) row, in ONE batched call; rows ordered by prompt
        (unconditional first), so plain SDS batches [uncond; cond] as the paper's code does."""
        rows = sorted(dict.fromkeys(rows), key=lambda r: PROMPT_ORDER.index(r[1]))
        z = torch.cat([latents[lat] for lat, _ in rows])
        emb = torch.cat([self._emb[key].expand(latents[lat].shape[0], -1, -1) for lat, key in rows])
        out = self.model.unet_eps(z, t, emb).split([latents[lat].shape[0] for lat, _ in rows])
        return dict(zip(rows, out))

    def _score(self, e: Predictions, eps, t, metrics):
        """Eq. (4) with the variant's direction; metrics keep the sds/ names for every variant."""
        a = self.model.alpha_bar(t)
        g, mse = score_latent_grad(self.variant.direction(e, eps, t), sds_weight(a, self.cfg.weighting),
                                   self.cfg.latent_grad_clamp, self.cfg.grad_scale)
        metrics["loss/sds_mse"] = mse
        metrics["sds/grad_norm"] = g.norm().detach()
        if self.cfg.latent_grad_clamp is not None:
            metrics["sds/clamp_frac"] = (g.abs() >= self.cfg.latent_grad_clamp).float().mean()
        return g

    def _reg_grads(self, t, z_t_train, eps_hat_train, eps_hat_frozen, z_frozen, metrics):
        """Sum of the enabled latent regularizer gradients (eqs. 6, 7), each clamped on its own."""
        a = self.model.alpha_bar(t)
        total = torch.zeros_like(eps_hat_train)
        if self.uses_directional:
            g, mse = directional_latent_grad(eps_hat_train, eps_hat_frozen, a, self.reg.directional.weight,
                                             self.cfg.latent_grad_clamp, self.cfg.grad_scale,
                                             self.reg.directional.rescale)
            metrics["loss/directional_mse"] = mse
            metrics["reg/directional_grad_norm"] = g.norm().detach()
            total = total + g
        if self.uses_reconstruction:
            g, dmse, x0mse = reconstruction_latent_grad(eps_hat_train, z_t_train, z_frozen, a,
                                                       self.reg.reconstruction.weight,
                                                       self.cfg.latent_grad_clamp, self.cfg.grad_scale)
            metrics["loss/reconstruction_diff_mse"] = dmse
            metrics["loss/reconstruction_x0_mse"] = x0mse
            metrics["reg/reconstruction_grad_norm"] = g.norm().detach()
            total = total + g
        return total

    def _lpips_loss(self, x_frozen_img, x_img, metrics):
        raw = self._lpips(x_frozen_img, x_img).mean()
        metrics["loss/lpips"] = raw.detach()
        scaled = raw * self.lpips_factor   # eq. (8): LPIPS * 2000 * weight (* grad_scale: EG3D's / 100, once)
        metrics["reg/lpips_scaled"] = scaled.detach()
        return scaled

    # reference: the paper code's passes (sd.py train_step / train_directionalLoss_step, ZSSGAN guidance)
    def _step_reference(self, x_train, x_frozen, t, rng, do_reg, do_lpips):
        m, s, metrics = self.model, self.cfg.cfg_scale, {}
        x = m.prepare_images(x_train)                                    # eq. (1): resize + clamp
        z = m.encode(x)                                                  # encode #1 (graph to x)
        eps = self._noise(z.shape, rng)
        latents = {TRAIN: m.add_noise(z.detach(), eps, t)}               # eq. (2)
        if self.variant.needs_frozen:                                    # DDS: the frozen render, same eps
            with torch.no_grad():
                latents[FROZEN] = m.add_noise(m.encode(m.prepare_images(x_frozen)), eps, t)
        e = self._predict(latents, list(self.variant.rows(t)), t)        # UNet call #1 (SDS: [uncond; cond])
        g_z = self._score(e, eps, t, metrics)
        later = do_reg or do_lpips
        if self.cfg.image_clamp_quantile is not None:                    # eq. (5)
            x_var = x.detach().requires_grad_(True)
            with torch.enable_grad():
                z_var = m.encode(x_var)                                  # encode #2 (clamp pull-back)
                (g_x,) = torch.autograd.grad(z_var, x_var, g_z)
            g_x = quantile_clamp(g_x, self.cfg.image_clamp_quantile)
            metrics["sds/image_grad_norm"] = g_x.norm().detach()
            inject_gradient(x, g_x, retain_graph=later)
        else:
            inject_gradient(z, g_z, retain_graph=later)
        if do_reg:
            xf = m.prepare_images(x_frozen)
            z_c, z_o = m.encode(x), m.encode(xf)                         # encodes #3, #4
            eps2 = self._noise(z.shape, rng)                             # the regularizer's own new eps
            zt_c = m.add_noise(z_c.detach(), eps2, t)
            e_o = None
            if self.uses_directional:   # sd.py train_directionalLoss_step, Directional_loss == 1
                e_c = m.predict_eps(zt_c, t, self._cond, self._uncond, s)                # UNet call [U; C]
                e_o = m.predict_eps(m.add_noise(z_o.detach(), eps2, t), t, self._cond, self._uncond, s)
            else:                       # Directional_loss == 2: separate uncond and cond calls
                n = zt_c.shape[0]
                e_u = m.unet_eps(zt_c, t, self._uncond.expand(n, -1, -1))                 # UNet call
                e_k = m.unet_eps(zt_c, t, self._cond.expand(n, -1, -1))                   # UNet call
                e_c = e_u + s * (e_k - e_u)
            # both regularizers read the same CFG prediction at zt_c: computed once, never discarded
            g_reg = self._reg_grads(t, zt_c, e_c, e_o, z_o, metrics)
            inject_gradient(z_c, g_reg, retain_graph=do_lpips)
        if do_lpips:                                                     # eq. (8)
            xf = m.prepare_images(x_frozen)
            inject_gradient(self._lpips_loss(xf, x, metrics))
        return metrics

    # fast: same quantities, one encode per image, one UNet call, one generator backward
    def _step_fast(self, x_train, x_frozen, t, rng, do_reg, do_lpips):
        m, s, metrics = self.model, self.cfg.cfg_scale, {}
        x = m.prepare_images(x_train)                                    # eq. (1)
        reads_frozen = do_reg or do_lpips or self.variant.needs_frozen
        xf = m.prepare_images(x_frozen).detach() if reads_frozen else None
        z = m.encode(x)                                                  # train rows: with graph
        z_o = None
        if do_reg or self.variant.needs_frozen:
            with torch.no_grad():                                        # frozen rows: no graph, no VJP
                z_o = m.encode(xf)
        zd = z.detach()
        eps = self._noise(z.shape, rng)
        latents = {TRAIN: m.add_noise(zd, eps, t)}                       # the variant's latents
        rows = list(self.variant.rows(t))
        if self.variant.needs_frozen:
            latents[FROZEN] = m.add_noise(z_o, eps, t)                   # DDS: frozen render, same eps
        if do_reg:
            eps2 = self._noise(z.shape, rng)
            latents[REG_TRAIN] = m.add_noise(zd, eps2, t)                # regularizer, train
            rows += [(REG_TRAIN, UNCOND), (REG_TRAIN, TARGET)]
            if self.uses_directional:
                latents[REG_FROZEN] = m.add_noise(z_o, eps2, t)          # regularizer, frozen (same eps2)
                rows += [(REG_FROZEN, UNCOND), (REG_FROZEN, TARGET)]
        e = self._predict(latents, rows, t)                              # ONE UNet call for every row
        g_z = self._score(e, eps, t, metrics)
        g_reg = None
        if do_reg:
            e_o = guided(e, REG_FROZEN, TARGET, s) if self.uses_directional else None
            g_reg = self._reg_grads(t, latents[REG_TRAIN], guided(e, REG_TRAIN, TARGET, s), e_o, z_o, metrics)
        # pull every latent gradient back to the image, sum with LPIPS, backward through G once
        if self.cfg.image_clamp_quantile is not None:
            (g_x,) = torch.autograd.grad(z, x, g_z, retain_graph=do_reg)
            g_x = quantile_clamp(g_x, self.cfg.image_clamp_quantile)
            metrics["sds/image_grad_norm"] = g_x.norm().detach()
            if do_reg:
                g_x = g_x + torch.autograd.grad(z, x, g_reg)[0]
        else:
            g_x = torch.autograd.grad(z, x, g_z if g_reg is None else g_z + g_reg)[0]
        if do_lpips:
            g_x = g_x + torch.autograd.grad(self._lpips_loss(xf, x, metrics), x)[0]
        inject_gradient(x, g_x)
        return metrics
