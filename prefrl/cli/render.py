"""``prefrl render``: a trained policy's rollout, or a rater-labelled segment pair (GIF/MP4, headless)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefrl.cli.values import int_in, seed
from prefrl.errors import ConfigError, RenderError
from prefrl.render import MAX_FPS, MAX_FRAME_SIZE, render_pair, render_rollout, run_env_spec

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``prefrl render`` (``--run DIR`` rollout, or ``--env ENV --pair --rater R``)."""
    p = subparsers.add_parser(
        "render",
        help="render a trained policy's rollout or a rater-labelled segment pair (GIF/MP4, headless)",
        description="prefrl render --run DIR [--out rollout.gif] | "
        "prefrl render --env ENV --pair --rater R [--run DIR] [--out pair.gif]. MuJoCo needs MUJOCO_GL=egl "
        "or osmesa (picked automatically when unset).",
    )
    p.add_argument("--run", default=None, help="run directory whose policy is rendered")
    p.add_argument(
        "--env", default=None, help="env spec name, with --pair (default: the --run's env); see `prefrl list`"
    )
    p.add_argument("--pair", action="store_true", help="render two segments and the rater's verdict")
    p.add_argument("--rater", default="partial_return", help="rater spec for --pair (names: `prefrl list`)")
    p.add_argument(
        "--out",
        default=None,
        help="output file, .gif or .mp4 (MP4 needs imageio-ffmpeg) (default: RUN/rollout.gif, or pair.gif)",
    )
    p.add_argument(
        "--episodes", type=int_in(1), default=1, help="episodes of the rollout (frames are written as made)"
    )
    p.add_argument(
        "--steps", type=int_in(1), default=None, help="steps per episode (default: the env's horizon)"
    )
    p.add_argument(
        "--segment-length",
        type=int_in(1),
        default=None,
        help="segment length for --pair (default: the env spec's)",
    )
    p.add_argument("--fps", type=int_in(1, MAX_FPS), default=30, help="frames per second")
    p.add_argument("--width", type=int_in(1, MAX_FRAME_SIZE), default=320, help="frame width in pixels")
    p.add_argument("--height", type=int_in(1, MAX_FRAME_SIZE), default=240, help="frame height in pixels")
    p.add_argument("--seed", type=seed, default=0, help="seeds the episodes (and the pair's segments)")
    p.add_argument(
        "--trust",
        action="store_true",
        help="also load a --run saved before prefrl's safe policy files (policy.pt, vecnormalize.json) "
        "through SB3's / torch's loaders, which UNPICKLE policy.zip and vecnormalize.pkl: a crafted file "
        "runs code. Only for run folders you made yourself or fully trust",
    )
    p.set_defaults(func=cmd_render)
    return p


def cmd_render(args: argparse.Namespace) -> int:
    """``prefrl render``; a :class:`RenderError` prints what to install and exits with status 3."""
    options = {
        "fps": args.fps,
        "width": args.width,
        "height": args.height,
        "seed": args.seed,
        "trust": args.trust,
    }
    try:
        if args.pair:
            env = args.env
            if env is None and args.run is None:
                raise ConfigError("--pair needs --env ENV (or --run DIR)")
            if env is None:
                env = run_env_spec(args.run).name
            out = args.out or "pair.gif"
            path, label = render_pair(
                env, args.rater, out, run_dir=args.run, segment_length=args.segment_length, **options
            )
            print(f"{path}  (rater label P(1 preferred) = {'skipped' if label is None else f'{label:.2f}'})")
        else:
            if args.run is None:
                raise ConfigError("give --run DIR (a rollout) or --env ENV --pair (a labelled pair)")
            print(
                render_rollout(
                    args.run, out=args.out, episodes=args.episodes, max_steps=args.steps, **options
                )
            )
    except RenderError as e:
        print(f"prefrl render: cannot render: {e}", file=sys.stderr)
        return 3
    return 0
