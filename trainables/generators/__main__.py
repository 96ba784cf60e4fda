"""CLI: `python -m trainables.generators {render,info,convert} ...`.

    render  --checkpoint CKPT --z Z.pt [--truncation PSI] [--device D] --out OUT(.pt|.png)
    info    --checkpoint CKPT [--json]
    convert --checkpoint CKPT --out OUT.pt [--to rosinality|nvlabs]
                                                (any supported format -> rosinality .pt, or NVlabs G_ema state dict)

StyleGAN3 checkpoints (NVlabs pickle, state dict, save_stylegan3 file) are recognised by content; they convert
`--to nvlabs` only (`{"G_ema", "init_kwargs"}`: StyleGAN3 has no rosinality layout).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from PIL import Image

from trainables.generators.formats import CheckpointError, load_generator, read_torch_file, save_nvlabs_state_dict, save_rosinality
from trainables.generators.stylegan2 import StyleGAN2, without_conv_clamp
from trainables.generators.stylegan3.formats import is_stylegan3_file, load_stylegan3, save_stylegan3
from trainables.generators.stylegan3.networks import StyleGAN3


class CliError(Exception):
    pass


def _load_z(path: Path, style_dim: int) -> torch.Tensor:
    if not path.exists():
        raise CliError(f"{path}: latent file not found; save a float tensor [N, {style_dim}] with "
                       f"torch.save(torch.randn(N, {style_dim}), '{path}')")
    try:
        obj = read_torch_file(path)
    except CheckpointError as e:
        raise CliError(str(e)) from None
    if isinstance(obj, dict) and "z" in obj:
        obj = obj["z"]
    if not torch.is_tensor(obj) or obj.ndim != 2 or obj.shape[1] != style_dim:
        shape = list(obj.shape) if torch.is_tensor(obj) else type(obj).__name__
        raise CliError(f"{path}: z has shape {shape}; expected a tensor [N, {style_dim}] (or a dict with key 'z')")
    return obj.to(torch.float32)


def image_grid(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> uint8 [H', W', 3] grid with ceil(sqrt(N)) columns."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    grid = torch.zeros(c, rows * h, cols * w, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = x[i]
    return grid.permute(1, 2, 0).contiguous()


def _load(path: str):
    """A StyleGAN3 when the file holds one, else a StyleGAN2 (whose loader names any problem)."""
    return load_stylegan3(path) if is_stylegan3_file(path) else load_generator(path)


def _render(args: argparse.Namespace) -> int:
    g = _load(args.checkpoint)
    z = _load_z(Path(args.z), g.cfg.z_dim if isinstance(g, StyleGAN3) else g.cfg.style_dim)
    device = torch.device(args.device)
    g = g.to(device)
    out = Path(args.out)
    if out.suffix not in (".pt", ".png"):
        raise CliError(f"{out}: output must end in .pt (float32 tensor) or .png (image grid)")
    chunks = []
    with torch.no_grad():
        for zb in z.split(args.batch_size):
            if isinstance(g, StyleGAN3):
                chunks.append(g(zb.to(device), args.truncation).float().cpu())
            else:
                chunks.append(g(zb.to(device), truncation=args.truncation, noise_mode="const").float().cpu())
    images = torch.cat(chunks)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        torch.save(images, out)
    else:
        Image.fromarray(image_grid(images).numpy()).save(out)
    print(f"wrote {out} ({images.shape[0]} images, {images.shape[-1]}x{images.shape[-2]}, truncation {args.truncation})")
    return 0


def describe(g: StyleGAN2 | StyleGAN3) -> dict:
    if isinstance(g, StyleGAN3):
        return {"format": getattr(g, "source_format", "unknown"), "kind": "stylegan3",
                "config": "stylegan3-" + g.cfg.config_kind, "resolution": g.cfg.img_resolution,
                "z_dim": g.cfg.z_dim, "w_dim": g.cfg.w_dim, "num_ws": g.num_ws,
                "channel_base": g.cfg.channel_base, "channel_max": g.cfg.channel_max,
                "parameters": sum(p.numel() for p in g.parameters())}
    return {
        "format": getattr(g, "source_format", "unknown"),
        "resolution": g.cfg.size,
        "style_dim": g.cfg.style_dim,
        "n_latent": g.n_latent,
        "n_mlp": g.cfg.n_mlp,
        "channels": {str(k): v for k, v in g.cfg.channels.items()},
        "lr_mlp": g.cfg.lr_mlp,
        "conv_clamp": g.cfg.conv_clamp,
        "parameters": sum(p.numel() for p in g.parameters()),
        "latent_avg": getattr(g, "latent_avg_source", "unknown"),
    }


def _info(args: argparse.Namespace) -> int:
    info = describe(_load(args.checkpoint))
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"checkpoint: {args.checkpoint}")
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0


WRITERS = {
    "rosinality": (save_rosinality, "rosinality format: {'g_ema', 'latent_avg', 'config'}"),
    "nvlabs": (save_nvlabs_state_dict, "NVlabs format: {'G_ema': state dict, 'init_kwargs'}, see docs/generators.md"),
}


def _convert(args: argparse.Namespace) -> int:
    g = _load(args.checkpoint)
    if isinstance(g, StyleGAN3):
        if args.to != "nvlabs":
            raise CliError(f"{args.checkpoint}: a StyleGAN3 has no rosinality layout; convert it with --to nvlabs")
        if args.conv_clamp != "keep":
            raise CliError(f"{args.checkpoint}: --conv-clamp applies to StyleGAN2 only (a StyleGAN3 keeps its clamp)")
        path = save_stylegan3(g, args.out)
        print(f"wrote {path} (NVlabs StyleGAN3 format: {{'G_ema': state dict, 'init_kwargs'}}; "
              f"from {getattr(g, 'source_format', '?')})")
        return 0
    if args.conv_clamp == "none":
        g = without_conv_clamp(g)
    save, what = WRITERS[args.to]
    path = save(g, args.out)
    print(f"wrote {path} ({what}; from {getattr(g, 'source_format', '?')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.generators", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render images from latents z with constant noise")
    r.add_argument("--checkpoint", required=True, help="rosinality .pt, NVlabs .pkl or state dict")
    r.add_argument("--z", required=True, help="torch file holding z [N, style_dim] (or {'z': ...})")
    r.add_argument("--truncation", type=float, default=1.0, help="psi; the centre is the checkpoint's mean latent")
    r.add_argument("--device", default="cpu")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--out", required=True, help=".pt (float32 [N,3,H,W]) or .png (grid)")
    r.set_defaults(func=_render)
    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
    c = sub.add_parser("convert", help="convert any supported checkpoint to the rosinality or NVlabs format")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--to", choices=sorted(WRITERS), default="rosinality",
                   help="rosinality .pt (default) or an NVlabs G_ema state dict + Generator arguments")
    c.add_argument("--conv-clamp", choices=("keep", "none"), default="keep",
                   help="none: drop NVlabs' activation clamp (conv_clamp = 256), as a rosinality conversion does; "
                        "the Fusion authors' AFHQ cat generator (afhqcat_rosinality.pt) ran without it")
    c.set_defaults(func=_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
