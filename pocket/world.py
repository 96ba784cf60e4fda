"""The pocket world: a procedural 32x32 image domain with known attributes, captions and ground truth.

One object on a flat background. Every image is a deterministic function of an `Attrs` record, and every
`Attrs` record of the source domain is a deterministic function of 7 uniform numbers `u` (so a generator's
latent z can carry them explicitly: u = z_to_uniform(z), a function of z's first coordinates). Rendering is vectorised in torch and anti-aliased by
4x4 supersampling. Captions are rendered from the attributes with varied wording and randomly omitted
attributes; a prompt catalogue names target domains whose ground truth is the source distribution with
exactly the prompted attributes set (same seeds -> paired images).

32x32, not 64x64: every pocket adaptation step runs the generator and the pocket-SD VAE encoder (with
gradient); on the 2 shared CPU cores this project is built on, 64x64 costs ~4x per step for no gain in what
the experiment can show (shape, colour, pattern and background are legible at 32 px with radius >= 5 px).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, fields, replace

import torch
from scipy.special import betainc

RES = 32                      # output resolution (pixels)
SUPERSAMPLE = 4               # anti-aliasing: render at RES * SUPERSAMPLE and average-pool
U_DIM = 7                     # uniform numbers that determine a source sample (see source_attrs)

# ---- attribute vocabularies (index = class id) -------------------------------------------------------------
SHAPES = ["circle", "square", "triangle", "star"]          # judge adds class 4 = "other" (hard negatives)
OTHER = len(SHAPES)                                        # shape id of a distorted (hard-negative) shape
OTHER_KINDS = ["ellipse", "rectangle", "wobble", "squircle", "squashed triangle"]
COLOURS = ["red", "green", "blue", "yellow", "purple"]
PALETTE = torch.tensor([[0.90, 0.10, 0.10],
                        [0.10, 0.70, 0.20],
                        [0.15, 0.30, 0.95],
                        [0.95, 0.85, 0.10],
                        [0.60, 0.20, 0.80]])
BACKGROUNDS = ["white", "black", "gray"]
BG_RGB = torch.tensor([[0.97, 0.97, 0.97],
                       [0.03, 0.03, 0.03],
                       [0.50, 0.50, 0.50]])
PATTERNS = ["plain", "striped", "outlined"]
SIZES = ["small", "large"]
SIZE_RANGE = {0: (5.0, 7.0), 1: (8.5, 11.0)}               # "radius" in output pixels per size class
SHAPE_EXTENT = 1.2                                         # max extent / radius over shapes (star, triangle)
STRIPE_PERIOD = 4.0                                        # diagonal stripe period (output pixels)
OUTLINE_WIDTH = 1.6                                        # outline width (output pixels)
SHADE_RANGE = (0.85, 1.10)                                 # brightness jitter of the object colour
SOURCE_CENTRED = True                                      # source-domain objects sit at the image centre

ATTRS = ["shape", "colour", "background", "pattern", "size"]   # the discrete, captionable attributes
VOCAB = {"shape": SHAPES, "colour": COLOURS, "background": BACKGROUNDS, "pattern": PATTERNS, "size": SIZES}
SOURCE_FIXED = {"shape": 0, "pattern": 0}                  # the source domain: plain circles, all else free


@dataclass
class Attrs:
    """A batch of world samples: one tensor per field, all of length B."""

    shape: torch.Tensor       # long, index into SHAPES, or OTHER
    colour: torch.Tensor      # long
    background: torch.Tensor  # long
    pattern: torch.Tensor     # long
    size: torch.Tensor        # long (0 small, 1 large)
    size_u: torch.Tensor      # float in [0,1]: position inside the size class's radius range
    x_u: torch.Tensor         # float in [0,1]: horizontal position inside the allowed range
    y_u: torch.Tensor         # float in [0,1]
    shade: torch.Tensor       # float: brightness multiplier of the object colour
    other_kind: torch.Tensor  # long, index into OTHER_KINDS (used when shape == OTHER)
    other_u: torch.Tensor     # float in [0,1]: distortion amount / phase of a hard negative

    def __len__(self) -> int:
        return self.shape.shape[0]

    def index(self, idx) -> "Attrs":
        return Attrs(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def with_(self, **spec) -> "Attrs":
        """Copy with discrete attributes set (names or ids), e.g. with_(shape="square", colour=0)."""
        out = replace(self)
        for k, v in spec.items():
            v = VOCAB[k].index(v) if isinstance(v, str) else int(v)
            setattr(out, k, torch.full_like(getattr(self, k), v))
        return out

    @staticmethod
    def cat(items: list["Attrs"]) -> "Attrs":
        return Attrs(**{f.name: torch.cat([getattr(a, f.name) for a in items]) for f in fields(Attrs)})

    def radius(self) -> torch.Tensor:
        lo = torch.where(self.size == 1, SIZE_RANGE[1][0], SIZE_RANGE[0][0])
        hi = torch.where(self.size == 1, SIZE_RANGE[1][1], SIZE_RANGE[0][1])
        return lo + (hi - lo) * self.size_u

    def centre(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Object centre in output pixels; the margin keeps every shape inside the frame."""
        margin = self.radius() * SHAPE_EXTENT + 1.0
        span = RES - 2 * margin
        return margin + span * self.x_u, margin + span * self.y_u

    def labels(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ATTRS}


def _bucket(u: torch.Tensor, n: int) -> torch.Tensor:
    return (u * n).long().clamp_(0, n - 1)


# ---- the source domain as an explicit map from uniforms ---------------------------------------------------
def source_attrs(u: torch.Tensor) -> Attrs:
    """u: [B, U_DIM] uniforms in [0,1] -> source-domain attributes (plain, centred circles).

    u[:,0] colour, u[:,1] background, u[:,2] size class, u[:,3] radius within class, u[:,4:6] position (x, y),
    u[:,6] shade. The source domain is centred (SOURCE_CENTRED, u[:,4:6] unused): StyleGAN2's
    spatially-uniform styles learn object placement slowly, and the CPU budget of the regression fit of
    pocket-StyleGAN2 did not allow it. The whole world (sample_world) has every position.
    """
    u = u.float().clamp(0, 1)
    b = u.shape[0]
    zeros = torch.zeros(b, dtype=torch.long)
    x_u, y_u = (torch.full((b,), 0.5), torch.full((b,), 0.5)) if SOURCE_CENTRED else (u[:, 4], u[:, 5])
    return Attrs(shape=zeros.clone(), colour=_bucket(u[:, 0], len(COLOURS)),
                 background=_bucket(u[:, 1], len(BACKGROUNDS)), pattern=zeros.clone(),
                 size=_bucket(u[:, 2], 2), size_u=u[:, 3], x_u=x_u, y_u=y_u,
                 shade=SHADE_RANGE[0] + (SHADE_RANGE[1] - SHADE_RANGE[0]) * u[:, 6],
                 other_kind=zeros.clone(), other_u=torch.zeros(b))


def z_to_uniform(z: torch.Tensor) -> torch.Tensor:
    """[B, D] latents -> [B, U_DIM] uniforms that StyleGAN2's mapping can see.

    The mapping starts with PixelNorm (z / rms(z)), so only the direction of z reaches the network: u is a
    function of the direction. x = z_i / ||z|| of an isotropic z has (x + 1) / 2 ~ Beta((D-1)/2, (D-1)/2),
    so u_i = that Beta CDF is exactly uniform (weakly dependent across i; nearly independent for D >= 32).
    """
    d = z.shape[1]
    x = (z[:, :U_DIM].double() / z.double().norm(dim=1, keepdim=True)).clamp(-1, 1)
    u = betainc((d - 1) / 2, (d - 1) / 2, ((x + 1) / 2).numpy())
    return torch.from_numpy(u).float()


def attrs_from_z(z: torch.Tensor) -> Attrs:
    """The pocket-StyleGAN2's latent -> attribute map: source_attrs(z_to_uniform(z))."""
    return source_attrs(z_to_uniform(z.detach().cpu()))


def sample_source(n: int, seed: int) -> Attrs:
    """n source samples, deterministic in seed (u drawn from a seeded generator)."""
    g = torch.Generator().manual_seed(seed)
    return source_attrs(torch.rand(n, U_DIM, generator=g))


def sample_world(n: int, seed: int, hard_negatives: float = 0.0) -> Attrs:
    """n samples of the whole world (every shape, pattern, colour, position...); some distorted shapes."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, U_DIM, generator=g)
    a = source_attrs(u)
    a.x_u, a.y_u = u[:, 4], u[:, 5]
    a.shape = torch.randint(0, len(SHAPES), (n,), generator=g)
    a.pattern = torch.randint(0, len(PATTERNS), (n,), generator=g)
    a.other_kind = torch.randint(0, len(OTHER_KINDS), (n,), generator=g)
    a.other_u = torch.rand(n, generator=g)
    if hard_negatives > 0:
        hard = torch.rand(n, generator=g) < hard_negatives
        a.shape = torch.where(hard, torch.full_like(a.shape, OTHER), a.shape)
    return a


# ---- signed distance functions (negative inside), p in output pixels relative to the centre, y up ----------
def _sd_box(px, py, bx, by):
    qx, qy = px.abs() - bx, py.abs() - by
    return torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)


def _sd_triangle(px, py, r):
    """Equilateral triangle pointing up with half-side r, centroid at 0 (Quilez's sdEquilateralTriangle)."""
    k = math.sqrt(3.0)
    px = px.abs() - r
    py = py + r / k
    flip = (px + k * py) > 0
    nx, ny = (px - k * py) / 2, (-k * px - py) / 2
    px, py = torch.where(flip, nx, px), torch.where(flip, ny, py)
    px = px - torch.maximum(torch.minimum(px, torch.zeros_like(px)), -2 * r)
    return -torch.sqrt(px ** 2 + py ** 2) * torch.sign(py)


def _sd_star5(px, py, r, rf=0.5):
    """Five-pointed star pointing up, outer radius r, inner ratio rf (Quilez's sdStar5)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = px.abs()
    d = (k1x * px + k1y * py).clamp(min=0)
    px, py = px - 2 * d * k1x, py - 2 * d * k1y
    d = (k2x * px + k2y * py).clamp(min=0)
    px, py = px - 2 * d * k2x, py - 2 * d * k2y
    px = px.abs()
    py = py - r
    bax, bay = rf * (-k1y), rf * k1x - 1.0
    h = ((px * bax + py * bay) / (bax ** 2 + bay ** 2)).clamp(min=0)
    h = torch.minimum(h, r)
    dx, dy = px - bax * h, py - bay * h
    return torch.sqrt(dx ** 2 + dy ** 2) * torch.sign(py * bax - px * bay)


def _sdf(a: Attrs, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """[B,S,S] signed distance of each sample's object; px,py: [B,S,S] relative coordinates (y up)."""
    r = a.radius()[:, None, None]
    out = torch.empty_like(px)
    shape = a.shape
    kind = torch.where(shape == OTHER, OTHER + a.other_kind, shape)   # 0..3 real shapes, 4.. hard negatives
    ou = a.other_u[:, None, None]
    for k in kind.unique().tolist():
        m = kind == k
        x, y, rr, uu = px[m], py[m], r[m], ou[m]
        if k == 0:                                    # circle
            d = torch.sqrt(x ** 2 + y ** 2) - rr
        elif k == 1:                                  # square (half side 0.85 r: area close to the circle's)
            d = _sd_box(x, y, 0.85 * rr, 0.85 * rr)
        elif k == 2:                                  # triangle, circumradius 1.15 r
            d = _sd_triangle(x, y - 0.1 * rr, 1.15 * rr * math.sqrt(3) / 2)
        elif k == 3:                                  # star, outer radius 1.15 r
            d = _sd_star5(x, y + 0.05 * rr, 1.15 * rr)
        else:
            name = OTHER_KINDS[k - OTHER]
            asp = 0.5 + 0.2 * uu                      # aspect ratio of squashed hard negatives
            if name == "ellipse":
                d = (torch.sqrt((x / (1.1 * rr)) ** 2 + (y / (1.1 * rr * asp)) ** 2) - 1) * rr * asp
            elif name == "rectangle":
                d = _sd_box(x, y, 0.95 * rr, 0.95 * rr * asp)
            elif name == "wobble":
                lobes = 3 + (uu * 3).floor()
                theta = torch.atan2(y, x)
                d = torch.sqrt(x ** 2 + y ** 2) - rr * (1 + 0.22 * torch.sin(lobes * theta))
            elif name == "squircle":
                d = (x.abs() ** 4 + y.abs() ** 4 + 1e-9) ** 0.25 - 0.95 * rr
            else:                                     # squashed triangle
                d = _sd_triangle(x, (y - 0.05 * rr) / asp, 1.15 * rr * math.sqrt(3) / 2) * asp
        out[m] = d
    return out


_GRID_CACHE: dict[int, torch.Tensor] = {}


def _grid(s: int) -> torch.Tensor:
    if s not in _GRID_CACHE:
        _GRID_CACHE[s] = (torch.arange(s, dtype=torch.float32) + 0.5) * (RES / s)   # subpixel centres
    return _GRID_CACHE[s]


def render(a: Attrs, supersample: int = SUPERSAMPLE, chunk: int = 512) -> torch.Tensor:
    """Attributes -> images [B, 3, RES, RES] float32 in [0, 1]."""
    if len(a) > chunk:
        return torch.cat([render(a.index(slice(i, i + chunk)), supersample, chunk) for i in range(0, len(a), chunk)])
    s = RES * supersample
    g = _grid(s)
    cx, cy = a.centre()
    px = g[None, None, :] - cx[:, None, None]                 # [B,1,S] -> broadcast below
    py = cy[:, None, None] - g[None, :, None]                 # y up
    px, py = px.expand(-1, s, -1), py.expand(-1, -1, s)
    d = _sdf(a, px.contiguous(), py.contiguous())
    inside = d < 0
    stripe = torch.remainder((px + py) / STRIPE_PERIOD, 1.0) < 0.5
    pat = a.pattern[:, None, None]
    fg = torch.where(pat == 1, inside & stripe, torch.where(pat == 2, inside & (d > -OUTLINE_WIDTH), inside))
    col = (PALETTE[a.colour] * a.shade[:, None]).clamp(0, 1)           # [B,3]
    bg = BG_RGB[a.background]
    img = torch.where(fg[:, None], col[:, :, None, None], bg[:, :, None, None])
    return torch.nn.functional.avg_pool2d(img, supersample)


def to_model(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1] (what every model in the project consumes)."""
    return x * 2 - 1


# ---- captions --------------------------------------------------------------------------------------------
PREFIXES = ["", "", "", "a picture of ", "an image of ", "a drawing of ", "a photo of ", "an illustration of "]
FILLERS = ["simple flat illustration", "high quality", "digital art", "minimalist", "centered",
           "clean vector graphic", "sharp edges", "2d render", "centered composition", "plain style"]
SIZE_WORDS = {0: ["small", "tiny"], 1: ["large", "big"]}
PATTERN_WORDS = {0: ["plain", "solid"], 1: ["striped"], 2: ["outlined", "hollow"]}
BG_FORMS = ["on a {} background", "against a {} background", "with a {} background", ", {} background",
            "on a {} backdrop"]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def caption(a: Attrs, i: int, rng: random.Random, p_keep: dict[str, float] | None = None) -> str:
    """One caption of sample i, with varied wording and randomly omitted attributes."""
    p = {"shape": 0.85, "colour": 0.7, "background": 0.5, "size": 0.4, "pattern": 0.85, "plain": 0.1,
         "filler": 0.3}
    p.update(p_keep or {})
    shape, colour, bg = int(a.shape[i]), int(a.colour[i]), int(a.background[i])
    pattern, size = int(a.pattern[i]), int(a.size[i])
    noun = SHAPES[shape] if shape < OTHER and rng.random() < p["shape"] else rng.choice(["shape", "object"])
    adjs = []
    if rng.random() < p["size"]:
        adjs.append(rng.choice(SIZE_WORDS[size]))
    col = [COLOURS[colour]] if rng.random() < p["colour"] else []
    pat = [rng.choice(PATTERN_WORDS[pattern])] if rng.random() < (p["pattern"] if pattern else p["plain"]) else []
    adjs += (col + pat) if rng.random() < 0.7 else (pat + col)
    if adjs and rng.random() < 0.15 and len(col) == 1 and len(adjs) == 1:     # "a circle that is red"
        body = f"{noun} that is {adjs[0]}"
    else:
        body = " ".join(adjs + [noun])
    prefix = rng.choice(PREFIXES)
    text = f"{prefix}{_article(body)} {body}"
    if rng.random() < p["background"]:
        form = rng.choice(BG_FORMS)
        text += ("" if form.startswith(",") else " ") + form.format(BACKGROUNDS[bg])
    if rng.random() < p["filler"]:
        text += ", " + ", ".join(rng.sample(FILLERS, rng.choice([1, 1, 2])))
    return re.sub(r"\s+", " ", text.replace(" ,", ",")).strip()


def captions(a: Attrs, seed: int, **kw) -> list[str]:
    rng = random.Random(seed)
    return [caption(a, i, rng, **kw) for i in range(len(a))]


# ---- prompt catalogue and ground truth -------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    text: str
    spec: dict          # attribute name -> value name: every attribute the prompt states
    kind: str           # "source", "short" or "long"

    @property
    def changed(self) -> dict:
        """The stated attributes that the source domain does not already fix to that value."""
        return {k: v for k, v in self.spec.items() if not (k in SOURCE_FIXED and VOCAB[k].index(v) == SOURCE_FIXED[k])}


SOURCE_PROMPT = Prompt("a circle", {"shape": "circle"}, "source")
CATALOGUE: list[Prompt] = [
    SOURCE_PROMPT,
    Prompt("a square", {"shape": "square"}, "short"),
    Prompt("a triangle", {"shape": "triangle"}, "short"),
    Prompt("a star", {"shape": "star"}, "short"),
    Prompt("a red circle", {"shape": "circle", "colour": "red"}, "short"),
    Prompt("a blue circle", {"shape": "circle", "colour": "blue"}, "short"),
    Prompt("a striped circle", {"shape": "circle", "pattern": "striped"}, "short"),
    Prompt("an outlined circle", {"shape": "circle", "pattern": "outlined"}, "short"),
    Prompt("a circle on a black background", {"shape": "circle", "background": "black"}, "short"),
    Prompt("a small circle", {"shape": "circle", "size": "small"}, "short"),
    Prompt("a large red striped square on a black background, simple flat illustration, centered, high quality",
           {"shape": "square", "colour": "red", "pattern": "striped", "background": "black", "size": "large"},
           "long"),
    Prompt("an image of a small blue outlined triangle on a white background, minimalist digital art, sharp edges",
           {"shape": "triangle", "colour": "blue", "pattern": "outlined", "background": "white", "size": "small"},
           "long"),
    Prompt("a drawing of a yellow star against a gray background, clean vector graphic, 2d render, high quality",
           {"shape": "star", "colour": "yellow", "background": "gray"}, "long"),
    Prompt("a picture of a purple striped circle on a white background, simple flat illustration, minimalist",
           {"shape": "circle", "colour": "purple", "pattern": "striped", "background": "white"}, "long"),
]
_BY_TEXT = {p.text: p for p in CATALOGUE}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def lookup(prompt: str) -> Prompt:
    """The catalogue entry of a prompt text (whitespace/case-insensitive); KeyError lists the catalogue."""
    for p in CATALOGUE:
        if _norm(p.text) == _norm(prompt):
            return p
    raise KeyError(f"prompt {prompt!r} is not in the pocket catalogue (pocket.prompts.resolve reads any prompt "
                   f"over the pocket vocabulary); known prompts: " + "; ".join(repr(p.text) for p in CATALOGUE))


def ground_truth(prompt: str | Prompt, a: Attrs) -> Attrs:
    """The target-domain twin of source samples a: exactly the prompted attributes set, all else kept.

    A str is a catalogue prompt; any other prompt: pass `pocket.prompts.resolve(text)` (its parsed spec)."""
    p = lookup(prompt) if isinstance(prompt, str) else prompt
    return a.with_(**p.spec)


def reference_images(prompt: str | Prompt | None, n: int, seed: int) -> torch.Tensor:
    """n ground-truth images of a prompt's target domain (None = the source domain), paired by seed.

    Depends on the prompt only through its spec: same spec and seed -> identical images (any prompt text)."""
    a = sample_source(n, seed)
    return render(a if prompt is None else ground_truth(prompt, a))
