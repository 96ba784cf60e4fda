"""`python -m trainables adapt --config FILE.yaml [--set key=value ...] [--resume auto|force|DIR]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from trainables.config_io import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("adapt", help="adapt a generator to a text prompt (StyleGAN-Fusion or StyleGAN-NADA)")
    a.add_argument("--config", required=True, help="YAML adaptation config (fields: trainables/config.py)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field by dotted path, e.g. --set guidance.cfg_scale=7.5 (repeatable)")
    a.add_argument("--resume", default=None, metavar="auto|force|DIR",
                   help="continue from a checkpoint dir, or 'auto' for the newest one in output_dir/checkpoints; "
                        "a checkpoint trained under a different config is refused (fields listed) unless 'force' "
                        "(the newest one, config change accepted)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        return 0

    # late on purpose: a config error or --print-config answers without importing torch (measured ~1.8 s)
    from trainables.adaptation.checkpointing import ConfigChangedError, ForcedResume, latest_checkpoint
    from trainables.adaptation.loop import adapt
    from trainables.preflight import MissingModelsError, check_models

    try:
        check_models(cfg, source=args.config)
    except MissingModelsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    resume = args.resume
    if resume in ("auto", "force"):
        found = latest_checkpoint(Path(cfg.output_dir))
        print(f"resuming from {found}" if found else "no checkpoint found; starting from step 0", file=sys.stderr)
        resume = ForcedResume(found) if found and args.resume == "force" else found
    try:
        result = adapt(cfg, resume_from=resume, progress=not args.quiet)
    except ConfigChangedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"adapted generator: {result.generator_path}")
    print(f"final grid (top: source, bottom: adapted): {result.final_grid_path}")
    print(f"step metrics: {result.output_dir / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
