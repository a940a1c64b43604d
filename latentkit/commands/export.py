"""``latentkit export OUT [--model M] [--format diffusers|ldm|onnx]``: write any model latentkit loads as a stock
diffusers folder, as one SD/LDM-layout ``.safetensors`` file (ComfyUI, AUTOMATIC1111), or as ONNX encoder and
decoder graphs (ONNX Runtime)."""

from __future__ import annotations

import argparse

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as a diffusers folder or an SD/LDM single .safetensors file",
        description="Load --model and write it. --format diffusers (default): OUT is a folder (config.json + "
                    "diffusion_pytorch_model.safetensors) that stock diffusers loads with "
                    "AutoencoderKL.from_pretrained(OUT), latentkit not needed; other files already in OUT (e.g. "
                    "MODEL_CARD.md) are kept. --format ldm: OUT is one .safetensors file in the original SD/LDM "
                    "key layout, the VAE file ComfyUI and AUTOMATIC1111 load (no config inside; an existing file "
                    "needs --overwrite). --format onnx: OUT is a folder that gets encoder.onnx (image in [0,1] -> "
                    "posterior mean, unscaled) and decoder.onnx (unscaled latent -> image in [0,1]), float32, "
                    "dynamic batch/height/width (multiples of 8), checked against PyTorch in ONNX Runtime when "
                    "it is installed; needs `pip install \"latentkit[onnx]\"`. Writes are atomic.")
    p.add_argument("out_dir", metavar="OUT",
                   help="output folder (--format diffusers, onnx) or .safetensors file (--format ldm)")
    p.add_argument("--format", choices=("diffusers", "ldm", "onnx"), default="diffusers",
                   help="diffusers folder, one SD/LDM-layout .safetensors file, or ONNX graphs (default: "
                        "%(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --format ldm / onnx: replace existing files")
    _args.add_model(p)
    _args.add_dtype(p)
    p.add_argument("--scaling-factor", type=float, default=None, metavar="F",
                   help="write this scaling_factor into the config (see `latentkit scale-factor`)")
    p.add_argument("--shift-factor", type=float, default=None, metavar="F",
                   help="write this shift_factor into the config (SD3/FLUX-style VAEs)")
    _args.add_json(p, "what was written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..pipeline import export, export_single_file

    if args.format != "diffusers" and (args.scaling_factor is not None or args.shift_factor is not None):
        raise LatentkitError(f"--format {args.format} holds no config, so no --scaling-factor / --shift-factor; "
                             "use --format diffusers for those")
    if args.format == "onnx":
        return _export_onnx(args)
    if args.format == "ldm":
        vae = _args.load_model(args, standalone=False)
        out = export_single_file(vae, args.out_dir, dtype=_args.torch_dtype(args.dtype), overwrite=args.overwrite,
                                 inputs=(_args.model_path(args.model),))
        from ..pipeline import LDM_NORM_GROUPS

        groups = vae.config.norm_num_groups
        note = None if groups == LDM_NORM_GROUPS else (
            f"{groups} GroupNorm groups: ComfyUI / AUTOMATIC1111 assume {LDM_NORM_GROUPS} and will not load it "
            "correctly; latentkit and diffusers' from_single_file(config=...) do")
        _args.report(args, {"output": str(out), "model": args.model or "default", "format": "ldm",
                            "dtype": args.dtype or "as loaded", "note": note},
                     f"wrote {out} (SD/LDM single file)" + (f"; note: {note}" if note else ""))
        return 0
    vae = _args.load_model(args, standalone=False)
    out = export(vae, args.out_dir, dtype=_args.torch_dtype(args.dtype), scaling_factor=args.scaling_factor,
                 shift_factor=args.shift_factor, inputs=(_args.model_path(args.model),))
    cfg = vae.config
    figures = {"output": str(out), "model": args.model or "default", "format": "diffusers", "scaling_factor": cfg.scaling_factor,
               "shift_factor": cfg.shift_factor, "dtype": args.dtype or "as loaded"}
    _args.report(args, figures, f"wrote {out} (scaling_factor={cfg.scaling_factor}, shift_factor="
                                f"{cfg.shift_factor}, dtype={args.dtype or 'as loaded'})")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..onnx_export import export_onnx

    if args.dtype not in (None, "fp32"):
        raise LatentkitError("ONNX export writes float32 graphs; --dtype fp16/bf16 is not supported")
    vae = _args.load_model(args, standalone=False)
    result = export_onnx(vae, args.out_dir, overwrite=args.overwrite)
    diffs = result["max_abs_diff"]
    check = ("not checked (onnxruntime not installed)" if diffs is None else
             "ONNX Runtime vs PyTorch max |diff|: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    _args.report(args, {"encoder": str(result["encoder"]), "decoder": str(result["decoder"]),
                        "model": args.model or "default", "format": "onnx", "max_abs_diff": diffs},
                 f"wrote {result['encoder']} and {result['decoder']}; {check}")
    return 0
