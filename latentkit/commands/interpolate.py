"""``latentkit interpolate A B -o strip.png``: decode points between two images' latents (linear or spherical)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate", help="decode a path between two images' latents, as a strip, frames or a GIF",
        description="Encode A and B (posterior means, unscaled), walk from one latent to the other in --steps "
                    "frames (both ends included: the first is A's reconstruction, the last B's) and decode each. "
                    "Linear by default; --slerp turns the direction along the great circle while the norm goes "
                    "linearly (points keep the endpoints' norm instead of cutting inside it). Images of different "
                    "sizes are centre-cropped to the smaller height and width. Outputs: -o one strip image, "
                    "--frames DIR numbered PNGs (frame_000.png, ...), --gif an animation (forwards then back); at "
                    "least one. A and B must be RGB (no alpha, not grayscale), at least 8x8 px.")
    p.add_argument("images", nargs="*", metavar="A B", help="the two images")
    p.add_argument("-o", "--output", default=None, metavar="STRIP", help="the frames side by side, one image file")
    p.add_argument("--frames", default=None, metavar="DIR", help="write the frames as DIR/frame_NNN.png")
    p.add_argument("--gif", default=None, metavar="OUT.gif", help="write the frames as a looping animated GIF")
    p.add_argument("--steps", type=int, default=8, metavar="N",
                   help="frames, both endpoints included (at least 2; default: %(default)s)")
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    p.add_argument("--duration", type=int, default=120, metavar="MS", help="GIF frame time (default: %(default)s ms)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _args.add_model(p)
    _args.add_max_pixels(p)
    _args.add_json(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from ..errors import LatentkitError
    from ..io import image_format

    if len(args.images) != 2:
        raise LatentkitError(f"interpolate needs exactly two images A B, got {len(args.images)}")
    for path in args.images:
        _args.check_input_file(path, "input")
    if args.steps < 2:
        raise LatentkitError(f"--steps must be at least 2 (the frames, both endpoints included), got {args.steps}")
    if args.steps > 1000:
        raise LatentkitError(f"--steps {args.steps}: at most 1000 frames")
    if args.duration < 1:
        raise LatentkitError(f"--duration must be at least 1 ms, got {args.duration}")
    if not (args.output or args.frames or args.gif):
        raise LatentkitError("give at least one output: -o STRIP, --frames DIR or --gif OUT.gif")
    for path in (args.output, args.gif):
        if path is not None:
            if path == _args.STDIO:
                raise LatentkitError("interpolate writes files; give a file name, not -")
            image_format(path)
            _args.check_output(path, inputs=tuple(args.images))
            _args.check_new_output(path, args.overwrite)
    if args.gif is not None and Path(args.gif).suffix.lower() != ".gif":
        raise LatentkitError(f"--gif {args.gif}: the file name must end in .gif")
    if args.frames is not None:
        frames = Path(args.frames)
        if frames.exists() and not frames.is_dir():
            raise LatentkitError(f"--frames {frames} exists and is not a folder")
        if not frames.parent.is_dir():
            raise LatentkitError(f"output folder {frames.parent} does not exist")
        for name in _frame_names(args.steps):
            _args.check_new_output(str(frames / name), args.overwrite)


def _frame_names(steps: int) -> list[str]:
    digits = max(3, len(str(steps - 1)))
    return [f"frame_{i:0{digits}d}.png" for i in range(steps)]


def run(args: argparse.Namespace) -> int:
    _check(args)
    from ..latent._images import read_rgb

    a, b = (read_rgb(p, _args.max_pixels(args)) for p in args.images)  # bad images fail before the model loads
    from ..io import image_format
    from ..latent import grid, interpolate
    from ..latent._images import gif_bytes, png_bytes, write_folder

    vae = _args.load_model(args)
    frames = interpolate(vae, a, b, args.steps, slerp=args.slerp)
    h, w = frames.shape[-2:]
    cropped = (a.height, a.width) != (h, w) or (b.height, b.width) != (h, w)
    outputs = {}
    if args.output:
        outputs[args.output] = png_bytes(grid(frames, gap=0), image_format(args.output))
    if args.gif:
        outputs[args.gif] = gif_bytes(frames, args.duration)
    frame_files = {n: png_bytes(f) for n, f in zip(_frame_names(args.steps), frames)} if args.frames else {}
    for path, data in outputs.items():  # everything is made before anything is written
        _args.write_output(path, data, inputs=tuple(args.images))
    written = list(outputs)
    if frame_files:
        written += write_folder(args.frames, frame_files, args.overwrite)
    figures = dict(inputs=args.images, model=args.model or "default", steps=args.steps, slerp=args.slerp, width=w,
                   height=h, cropped=cropped, outputs=written)
    note = f" (centre-cropped to {w}x{h})" if cropped else ""
    _args.report(args, figures, f"{args.steps} frames of {w}x{h}{note}, {'slerp' if args.slerp else 'linear'}: "
                                f"wrote {', '.join(list(outputs) + ([args.frames] if frame_files else []))}")
    return 0
