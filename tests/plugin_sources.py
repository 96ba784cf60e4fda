"""Sources of components written OUTSIDE the repo, as a researcher would write them, for the extension tests.

`write_plugin_package(root)` writes the package `labplugins` into `root` (a temporary folder the tests put on
PYTHONPATH): nothing in the repo is edited or registered for them.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

# A score variant with a setting of its own: SDS's direction scaled by `gain` (guidance.half.gain).
VARIANT = '''
from pydantic import Field

from trainables.guidance.variants.base import TARGET, TRAIN, UNCOND, ScoreVariant
from trainables.settings import StrictModel


class GainSettings(StrictModel):
    gain: float = Field(0.5, gt=0)      # multiplies SDS's direction


class GainSds(ScoreVariant):
    name = "gain"
    label = "gain"
    settings_key = "half"
    Settings = GainSettings

    def rows(self, t):
        return ((TRAIN, UNCOND), (TRAIN, TARGET))

    def direction(self, e, eps, t):
        return self.settings.gain * (self.cfg_eps(e, TRAIN) - eps)
'''

# A generator family the platform has never seen: z -> tanh(linear(z)) reshaped to an image, with a setting
# (generator.toy.out_gain) that scales its output.
KIND = '''
from pathlib import Path

import torch
from pydantic import Field

from trainables.settings import StrictModel

FORMAT = "labplugins.toy/v1"


class ToySettings(StrictModel):
    out_gain: float = Field(1.0, gt=0)   # the rendered image is tanh(out_gain * linear(z))


class ToyGenerator(torch.nn.Module):
    def __init__(self, z_dim: int = 8, size: int = 16):
        super().__init__()
        self.cfg = {"z_dim": z_dim, "size": size}
        self.fc = torch.nn.Linear(z_dim, 3 * size * size)

    @property
    def device(self):
        return self.fc.weight.device

    def forward(self, z, gain=1.0):
        size = self.cfg["size"]
        return torch.tanh(gain * self.fc(z)).view(-1, 3, size, size)


class ToyKind:
    name = "labplugins.kind:ToyKind"
    Settings = ToySettings
    settings_key = "toy"
    config_defaults = {}
    layer_selection = False

    def __init__(self):
        self.settings = ToySettings()

    @staticmethod
    def recognises(path):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return False
        return isinstance(obj, dict) and obj.get("format") == FORMAT

    @staticmethod
    def owns(g):
        return isinstance(g, ToyGenerator)

    def load(self, path):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
            raise ValueError(f"{path} is not a toy generator file")
        g = ToyGenerator(**obj["cfg"])
        g.load_state_dict(obj["state"])
        return g.eval()

    def save(self, g, path):
        torch.save({"format": FORMAT, "cfg": g.cfg, "state": g.state_dict()}, path)
        return Path(path)

    def architecture(self, gen_cfg, notes):
        return self.load(gen_cfg.checkpoint).cfg

    def build(self, arch):
        return ToyGenerator(**arch)

    def trainable_names(self, g, trainable_set, freeze_bias):
        return {n for n, _ in g.named_parameters() if not (freeze_bias and n.endswith("bias"))}

    @torch.no_grad()
    def step_inputs(self, g_frozen, batch, rng, truncation, device):
        return truncation * torch.randn(batch, g_frozen.cfg["z_dim"], generator=rng).to(device)

    def render(self, g, inputs, noise_mode, noise_rng):
        return g(inputs, self.settings.out_gain)

    def grid_inputs(self, g_frozen, z, truncation):
        return truncation * z

    def render_grid(self, g, inputs):
        return g(inputs, self.settings.out_gain)

    def z_dim(self, g):
        return g.cfg["z_dim"]

    def eval_inputs(self, g, z, truncation, first_index=0):
        return truncation * z

    def extra_artifacts(self, g, out_dir, seed):
        return []
'''


def write_plugin_package(root: Path) -> Path:
    pkg = Path(root) / "labplugins"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "variant.py").write_text(textwrap.dedent(VARIANT).lstrip())
    (pkg / "kind.py").write_text(textwrap.dedent(KIND).lstrip())
    return Path(root)
