"""Export a KL autoencoder as two ONNX graphs for ONNX Runtime and other ONNX deployments.

``encoder.onnx``: ``image`` (N x 3 x H x W, float32 in [0, 1]) -> ``latent`` (N x C x H/f x W/f, the posterior
mean, unscaled). ``decoder.onnx``: ``latent`` (unscaled) -> ``image`` (N x 3 x fh x fw, float32 in [0, 1]).
f is the model's downsampling factor (8 for SD-style VAEs); batch, height and width are dynamic, and H, W must
be multiples of f (pad as :func:`latentkit.model.pad_to_multiple` does). The [0, 1] <-> [-1, 1] mapping is
inside the graphs, so they take and give what latentkit's own ``encode`` / ``decode`` do; a pipeline that
wants scaled latents multiplies by ``scaling_factor`` itself, as with the PyTorch model.

Needs the ``onnx`` and ``onnxscript`` packages (``pip install "latentkit[onnx]"``); verification also needs
``onnxruntime``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import LatentkitError
from .model import downsampling_factor

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

#: the files an export writes into its folder
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"
#: the ONNX opset of the exported graphs (ONNX Runtime >= 1.16 runs it)
OPSET = 18


class _Encoder(torch.nn.Module):
    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image * 2 - 1).latent_dist.mean


class _Decoder(torch.nn.Module):
    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.vae.decode(latent).sample + 1) / 2).clamp(0, 1)


def graphs(vae: AutoencoderKL) -> dict[str, tuple[torch.nn.Module, torch.Tensor, str, str]]:
    """File name -> (module, example input, input name, output name) of the two graphs, float32 on the CPU."""
    f = downsampling_factor(vae)
    c = vae.config.latent_channels
    return {ENCODER_FILE: (_Encoder(vae), torch.rand(1, 3, 4 * f, 4 * f), "image", "latent"),
            DECODER_FILE: (_Decoder(vae), torch.randn(1, c, 4, 4), "latent", "image")}


def export_onnx(vae: AutoencoderKL, out_dir: str | os.PathLike, overwrite: bool = False,
                verify: bool = True) -> dict[str, object]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` (weights embedded, float32) into `out_dir` (created if
    missing; other files in it are kept). Each file is written atomically; existing ones need `overwrite`.

    ``verify``: run both graphs in ONNX Runtime on a random input of a size other than the traced one and
    return the largest absolute difference from PyTorch (pixels in [0, 1] / latent units); skipped (None)
    when onnxruntime is not installed. Returns ``{"encoder": path, "decoder": path, "max_abs_diff": {...}}``.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise LatentkitError(f"ONNX export needs the {e.name} package: pip install \"latentkit[onnx]\"") from None
    from .io import atomic_write

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"{out} is a file; ONNX export writes a folder ({ENCODER_FILE}, {DECODER_FILE})")
    existing = [str(out / name) for name in (ENCODER_FILE, DECODER_FILE) if (out / name).exists()]
    if existing and not overwrite:
        raise LatentkitError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    if not out.parent.is_dir():
        raise LatentkitError(f"output folder {out.parent} does not exist")
    vae = _float32_cpu(vae)
    out.mkdir(exist_ok=True)
    paths = {}
    for name, (module, example, input_name, output_name) in graphs(vae).items():
        def write(tmp: Path, module=module, example=example, input_name=input_name, output_name=output_name):
            _export_one(module, example, input_name, output_name, tmp)

        paths[name] = atomic_write(out / name, write)
    diffs = verify_onnx(vae, out) if verify else None
    return {"encoder": paths[ENCODER_FILE], "decoder": paths[DECODER_FILE], "max_abs_diff": diffs}


def _float32_cpu(vae: AutoencoderKL) -> AutoencoderKL:
    p = next(vae.parameters())
    if p.dtype == torch.float32 and p.device.type == "cpu":
        return vae
    import copy

    from .model import move

    return move(copy.deepcopy(vae), device="cpu", dtype=torch.float32)


def _export_one(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_name: str,
                path: Path) -> None:
    from torch.export import Dim

    dynamic = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    # torch.export + onnxscript print pages of progress, warnings and logs; a failure is reported in one line
    quiet = io.StringIO()
    logger = logging.getLogger("torch")
    level = logger.level
    try:
        logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=[input_name],
                                        output_names=[output_name], opset_version=OPSET,
                                        dynamic_shapes={input_name: dynamic}, verbose=False)
            program.save(str(path), external_data=False)
    except LatentkitError:
        raise
    except Exception as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Error" in ln or "error" in ln), lines[0] if lines else "")
        raise LatentkitError(f"cannot export the {input_name} -> {output_name} graph to ONNX: "
                             f"{type(e).__name__}: {detail.strip()[:300]}") from None
    finally:
        logger.setLevel(level)


def verify_onnx(vae: AutoencoderKL, out_dir: str | os.PathLike, seed: int = 0) -> dict[str, float] | None:
    """Largest absolute difference between ONNX Runtime and PyTorch on a random input (batch 2, 5f x 7f pixels,
    a size the export did not trace), per graph: ``{"encoder": ..., "decoder": ...}``; None without
    onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    vae = _float32_cpu(vae)
    g = torch.Generator().manual_seed(seed)
    f = downsampling_factor(vae)
    c = vae.config.latent_channels
    inputs = {ENCODER_FILE: torch.rand(2, 3, 5 * f, 7 * f, generator=g),
              DECODER_FILE: torch.randn(2, c, 5, 7, generator=g)}
    diffs = {}
    for name, (module, _, input_name, _) in graphs(vae).items():
        session = ort.InferenceSession(str(Path(out_dir) / name), providers=["CPUExecutionProvider"])
        x = inputs[name]
        with torch.no_grad():
            ref = module(x).numpy()
        got = session.run(None, {input_name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise LatentkitError(f"{name}: ONNX Runtime gave shape {got.shape}, PyTorch {ref.shape}")
        diffs[name.removesuffix(".onnx")] = float(abs(got - ref).max())
    return diffs
