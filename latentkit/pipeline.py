"""diffusers integration: export a VAE as a stock diffusers folder, swap it into a pipeline, estimate its
``scaling_factor`` (and ``shift_factor``).

Latents elsewhere in latentkit are *unscaled*. A diffusion model sees ``(z - shift_factor) * scaling_factor``
(``shift_factor`` is 0 for SD 1.x/2.x/XL, set for SD3/FLUX-style VAEs), which is why a VAE needs factors that
give its latents unit variance before it can replace a pipeline's own VAE.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from .errors import LatentkitError
from .model import SINGLE_FILE_CONFIG_KEY, centre_crop, downsampling_factor, encode, move, save_vae


# ---------------------------------------------------------------------------------------------- export


def export(vae: AutoencoderKL, out_dir: str | os.PathLike, dtype: torch.dtype | None = None,
           scaling_factor: float | None = None, shift_factor: float | None = None,
           inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write `vae` as a diffusers folder that stock ``AutoencoderKL.from_pretrained(out_dir)`` loads.

    Args:
        dtype: weights dtype on disk (``torch.float16``/``bfloat16``/``float32``); None keeps the model's.
        scaling_factor, shift_factor: written into ``config.json`` when given (the model's config is updated).
        inputs: paths the model was loaded from; `out_dir` may not be one of them or contain one of them.

    Existing extra files in `out_dir` (e.g. ``MODEL_CARD.md``) are kept; the write is atomic (temporary folder,
    then rename). Returns `out_dir`.
    """
    out = Path(out_dir).expanduser()
    if out.exists():
        if not out.is_dir():
            raise LatentkitError(f"output {out} exists and is not a folder")
        for src in map(Path, inputs):
            if src.exists() and (os.path.samefile(src, out) or out.resolve() in src.resolve().parents
                                 or (src / "vae").is_dir() and os.path.samefile(src / "vae", out)):
                raise LatentkitError(f"refusing to overwrite the input model {src}; choose another output folder")
    if scaling_factor is not None:
        if not scaling_factor > 0:
            raise LatentkitError(f"scaling factor must be positive, got {scaling_factor}")
        vae.register_to_config(scaling_factor=float(scaling_factor))
    if shift_factor is not None:
        vae.register_to_config(shift_factor=float(shift_factor))
    return save_vae(vae, out, dtype=dtype)


#: GroupNorm groups SD/LDM single-file loaders (ComfyUI, AUTOMATIC1111) assume: other models load there wrongly
LDM_NORM_GROUPS = 32


def export_single_file(vae: AutoencoderKL, out_file: str | os.PathLike, dtype: torch.dtype | None = None,
                       overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write `vae` as one ``.safetensors`` file in the original SD/LDM key layout (:func:`latentkit.model.
    to_ldm_state_dict`), the VAE file ComfyUI and AUTOMATIC1111 load, and which ``load_vae`` and diffusers'
    ``AutoencoderKL.from_single_file(out_file, config=...)`` read back. The file has no config: the
    architecture is read off the weights (ComfyUI, AUTOMATIC1111), so those load it only with
    ``norm_num_groups`` = :data:`LDM_NORM_GROUPS`; the full config also travels in the file's safetensors
    metadata, which ``load_vae`` reads, so latentkit loads any model from it exactly.

    ``dtype``: weights dtype in the file (None keeps the model's). Refuses an existing file unless `overwrite`,
    and never writes over one of `inputs`; the write is atomic."""
    from safetensors.torch import save_file

    from .io import atomic_write
    from .model import to_ldm_state_dict

    out = Path(out_file).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise LatentkitError(f"a single-file export is a .safetensors file; got {out}")
    if out.exists() and not overwrite:
        raise LatentkitError(f"{out} already exists; pass --overwrite to replace it")
    sd = to_ldm_state_dict(vae)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    config = json.dumps({k: v for k, v in dict(vae.config).items() if not k.startswith("_")}, default=list)
    metadata = {"format": "pt", SINGLE_FILE_CONFIG_KEY: config}
    return atomic_write(out, lambda tmp: save_file(sd, str(tmp), metadata=metadata), tuple(inputs))


# ---------------------------------------------------------------------------------------------- swap_vae


def _denoiser(pipe) -> torch.nn.Module:
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None and hasattr(getattr(module, "config", None), "in_channels"):
            return module
    raise LatentkitError(f"{type(pipe).__name__} has no unet or transformer component to check the VAE against")


def accepted_latent_channels(pipe) -> set[int]:
    """Latent channel counts a pipeline's denoiser takes, from its ``in_channels`` and the pipeline type.

    ``in_channels`` is the latent count itself for text-to-image and img2img models (SD, SDXL, SD3, PixArt);
    inpainting models take latents + masked-image latents + mask (9 = 4 + 4 + 1); InstructPix2Pix takes
    latents + image latents (8 = 4 + 4); FLUX-style pipelines pack 2 x 2 latent patches (64 = 16 x 4).
    """
    den = _denoiser(pipe)
    cin = int(den.config.in_channels)
    kind = type(pipe).__name__.lower()
    if hasattr(pipe, "_pack_latents"):  # FLUX family: 2x2 patches; Fill/Control variants widen only the input
        cout = getattr(den.config, "out_channels", None) or cin
        return {cout // 4}
    accepted = {cin}
    if "inpaint" in kind and (cin - 1) % 2 == 0:
        accepted.add((cin - 1) // 2)
    if "pix2pix" in kind and cin % 2 == 0:
        accepted.add(cin // 2)
    return accepted


def swap_vae(pipe, vae: AutoencoderKL):
    """Put `vae` into a diffusers pipeline with a ``vae`` component, on the pipeline's device and dtype.

    Checks that the VAE's latent channel count fits the pipeline's UNet/transformer (see
    :func:`accepted_latent_channels`) and that its downsampling factor equals the pipeline's
    ``vae_scale_factor``; raises :class:`LatentkitError` when they do not fit. The VAE's
    ``scaling_factor``/``shift_factor`` are what the pipeline will use: estimate them with
    :func:`estimate_scale_factor` for a VAE trained by latentkit. Returns the pipeline.
    """
    if "vae" not in getattr(pipe, "components", {}):
        raise LatentkitError(f"{type(pipe).__name__} has no vae component")
    name = type(pipe).__name__
    accepted = accepted_latent_channels(pipe)
    c = int(vae.config.latent_channels)
    if c not in accepted:
        den = _denoiser(pipe)
        raise LatentkitError(
            f"the VAE has {c} latent channels but {name}'s {type(den).__name__} (in_channels="
            f"{den.config.in_channels}) takes {' or '.join(map(str, sorted(accepted)))}; use a VAE made for it")
    f = downsampling_factor(vae)
    expected = getattr(pipe, "vae_scale_factor", None)
    if expected is not None and f != expected:
        raise LatentkitError(f"the VAE downsamples by {f} but {name} expects vae_scale_factor={expected}; "
                             "use a VAE with the same number of blocks")
    p = next(_denoiser(pipe).parameters())
    vae = move(vae, device=p.device, dtype=p.dtype)
    vae.eval().requires_grad_(False)
    pipe.register_modules(vae=vae)
    return pipe


# ---------------------------------------------------------------------------------------------- scale factor

def _batches(images, limit: int | None, batch_size: int) -> tuple[Iterator[torch.Tensor], int]:
    """Images (tensor, list of tensors or folder) -> (iterator of N x 3 x H x W batches in [0, 1], count)."""
    from .io import list_images, read_image

    if isinstance(images, (str, os.PathLike)):
        files = list_images(images, recursive=True, limit=limit)
        return (read_image(p).batch() for p in files), len(files)
    if isinstance(images, torch.Tensor):
        images = images[:limit] if limit else images
        return iter(images.split(batch_size)), -(-len(images) // batch_size)
    images = list(images)[:limit] if limit else list(images)
    return (x if x.dim() == 4 else x.unsqueeze(0) for x in images), len(images)


def estimate_scale_factor(vae: AutoencoderKL, images, limit: int | None = None, sample: bool = True,
                          shift: bool = False, crop: int | None = None, batch_size: int = 8,
                          seed: int = 0, progress: bool = True) -> tuple[float, float | None]:
    """Estimate the diffusers ``scaling_factor`` (and ``shift_factor``) that give `vae`'s latents unit variance.

    Args:
        images: a folder of images (searched recursively, as for training), an N x 3 x H x W tensor, or a list
            of 3 x H x W / N x 3 x H x W tensors; colour in [0, 1].
        limit: use at most this many images.
        sample: statistics of posterior *samples* (as SD's 0.18215 was derived: ``1 / z.flatten().std()`` over
            sampled latents); False uses posterior means, which have slightly smaller variance.
        shift: also return ``shift_factor`` = the latent mean (SD3/FLUX-style VAEs, where the pipeline feeds
            ``(z - shift_factor) * scaling_factor``); else ``None``, as for SD 1.x/2.x/XL.
        crop: centre-crop each image to at most crop x crop pixels first (faster on large images).
        batch_size: images per encoder call for a tensor input (folders and lists go one item at a time).
        seed: seeds the posterior samples.

    Returns:
        ``(scaling_factor, shift_factor)``: ``scaling_factor = 1 / std`` of all latent values (all channels
        pooled, population std around their mean), ``shift_factor`` their mean or None.
    """
    batches, total = _batches(images, limit, batch_size)
    gen = torch.Generator(device=next(vae.parameters()).device).manual_seed(seed)
    n, s1, s2 = 0, 0.0, 0.0
    for x in tqdm(batches, total=total, desc="latent statistics", unit="batch", disable=not progress):
        z = encode(vae, x if crop is None else centre_crop(x, crop, crop), sample=sample, generator=gen).double()
        n += z.numel()
        s1 += z.sum().item()
        s2 += z.square().sum().item()
    if n == 0:
        raise LatentkitError("no images to estimate the scaling factor from")
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0)
    if var == 0.0:
        raise LatentkitError("the latents are constant: cannot estimate a scaling factor")
    return 1.0 / var ** 0.5, (mean if shift else None)
