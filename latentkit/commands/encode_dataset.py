"""``latentkit encode-dataset SRC -o OUT_DIR``: encode a whole image dataset to sharded latents for training, on
one CPU/GPU or on many under ``accelerate launch`` (see docs/encode-dataset.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LatentkitError
from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "encode-dataset", help="encode an image dataset to sharded latents (safetensors) for training",
        description="Encode every image of SRC (a folder, recursive, or a text file of paths, one a line) to "
                    "unscaled latents in OUT_DIR: shards of safetensors files with sidecar JSON (source paths, "
                    "sizes, crop boxes), index.json and failed.txt. Reruns with the same arguments redo only "
                    "missing shards. Several GPUs or machines: accelerate launch -m latentkit.cli encode-dataset "
                    "... (each process writes its own shards). Read it back with latentkit.data.LatentDataset. "
                    "See docs/encode-dataset.md.")
    p.add_argument("source", metavar="SRC", help="a folder of images (searched recursively) or a text file of "
                                                 "image paths, one per line (relative to the file's folder)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="the output folder (created)")
    _args.add_model(p)
    p.add_argument("--size", default=None, metavar="S|WxH",
                   help="encode every image at this size, pixels (default: 256; multiples of the model's "
                        "downsampling factor, 8)")
    p.add_argument("--resize", default="center-crop", choices=("center-crop", "short-side"),
                   help="center-crop: scale to cover --size and cut the centre (one size); short-side: scale the "
                        "short side to --size S, keep the aspect ratio (default: %(default)s)")
    p.add_argument("--buckets", default=None, metavar="S|WxH,...",
                   help="aspect-ratio buckets instead of one size: S makes sizes of about S x S pixels (steps of "
                        "S/8, ratios up to 4:1), or list them; each image goes to the nearest ratio, center-cropped")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per model call (default: 8)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="images per shard file (default: %(default)s)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--sample", action="store_true", help="store a draw from the posterior (seeded by --seed)")
    kind.add_argument("--mean", action="store_true", help="store the posterior mean (the default)")
    p.add_argument("--with-std", action="store_true",
                   help="also store the posterior's standard deviation (with the mean; lets LatentDataset sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draws (default: %(default)s)")
    p.add_argument("--dtype", choices=sorted(_args.DTYPES), default="fp32",
                   help="dtype the latents are stored in (default: %(default)s; fp16/bf16 halve the bytes)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images of SRC")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="image-decoding worker processes per process (default: CPU cores per process, up to 8 "
                        "with a GPU; half of them on CPU)")
    p.add_argument("--verify", action="store_true",
                   help="re-read every shard completely (checksum, counts, shapes, finite values); bad existing "
                        "shards are encoded again")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="decode the first N images to OUT_DIR/preview/*.png (source crop | decoded) and print PSNR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an OUT_DIR that holds a dataset encoded with other settings")
    _args.add_max_pixels(p, "source images (they are listed in failed.txt)")
    _args.add_json(p, "the summary")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name, low in (("batch_size", 1), ("shard_size", 1), ("limit", 1), ("workers", 0), ("preview", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise LatentkitError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.with_std and args.sample:
        raise LatentkitError("--with-std stores the posterior's spread beside its mean; it does not go with --sample")
    out, src = Path(args.output), Path(args.source)
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"output {out} is a file; give a folder")
    if src.is_dir() and (out.resolve() == src.resolve() or src.resolve() in out.resolve().parents):
        raise LatentkitError(f"output {out} is inside the source folder {src}; its previews would become sources "
                             "on a rerun: choose a folder outside it")


def run(args: argparse.Namespace) -> int:
    from ..data.geometry import make_resize
    from ..data.items import list_sources

    _check(args)
    make_resize(args.size, args.resize, args.buckets)  # the syntax, before the model loads
    paths = list_sources(args.source, args.limit)
    max_pixels = _args.max_pixels(args)

    from ..data.encode import Options, encode_dataset  # torch from here on

    opts = Options(out_dir=args.output, source=args.source, model=args.model, allow_pickle=args.allow_pickle,
                   size=args.size, resize=args.resize, buckets=args.buckets, batch_size=args.batch_size,
                   shard_size=args.shard_size, sample=args.sample, seed=args.seed, with_std=args.with_std,
                   dtype=args.dtype, workers=args.workers, verify=args.verify, preview=args.preview,
                   overwrite=args.overwrite, max_pixels=max_pixels)
    status, s = encode_dataset(paths, opts)
    if s is not None:
        failed = f", {s['failed']} failed (listed in {Path(s['out']) / 'failed.txt'})" if s["failed"] else ""
        preview = (f"; preview: {s['preview_images']} images in {Path(s['out']) / 'preview'}, PSNR "
                   f"{s['preview_psnr_db']:.2f} dB" if s.get("preview_images") else "")
        line = (f"encode-dataset: {s['images']} images{failed} in {s['shards']} shards of {s['out']} "
                f"({s['encoded']} encoded now, {s['shards_kept']} shards kept); {s['bytes_written'] / 1e6:.2f} MB "
                f"written, {s['bytes_per_image']:.0f} bytes per image; {s['seconds']:.1f} s, "
                f"{s['images_per_second']:.2f} images/s on {s['processes']} {s['device']} process"
                f"{'es' if s['processes'] > 1 else ''}{preview}")
        print_json = dict(s)
        _args.report(args, print_json, line)
    return status
