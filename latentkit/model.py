"""The KL autoencoder: named configs, loading from every SD-family format, saving, encode and decode.

The model *is* a stock :class:`diffusers.AutoencoderKL`. ``load_vae(..., standalone=True)`` gives the same
network as :class:`latentkit.standalone.StandaloneAutoencoderKL` (same weights and outputs, inference only), which
the commands and the codec run so that they do not pay diffusers' import; every function here takes either.

Conventions (see README "Architecture"):
- images are float tensors in [0, 1], shape N x 3 x H x W; the model's [-1, 1] range stays inside this module;
- latents are *unscaled* (as the encoder outputs them), shape N x C x ceil(H/8) x ceil(W/8); the diffusers
  ``scaling_factor`` is applied only at the pipeline boundary (:mod:`latentkit.pipeline`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import torch

from . import standalone
from .errors import LatentkitError
from .io import current_umask
from .train import checkpoint
from .weights import REPO_WEIGHTS

if TYPE_CHECKING:
    import PIL.Image
    from diffusers import AutoencoderKL

#: Named architectures. ``sd`` is the SD 1.x/2.x kl-f8 VAE; ``tiny``/``small`` are CPU-sized for our own weights.
CONFIGS: dict[str, dict[str, Any]] = {
    "sd": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
               scaling_factor=0.18215),
    # Few normalisation groups: with one channel per group GroupNorm acts as instance norm and throws away
    # each feature map's mean and contrast, which stalls training early (see MODEL_CARD.md).
    "tiny": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=8,
                 scaling_factor=1.0),
    "small": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=1, norm_num_groups=16,
                  scaling_factor=1.0),
}

DEFAULT_MODEL_DIR = REPO_WEIGHTS / "default"
#: The shipped models by name. ``default``: the autoencoder (diffusers pipelines, roundtrip, latents); ``codec``:
#: the `.latent` codec's model, what `.latent` files use by default (since session 19 its encoder too was trained
#: for the codec, with the bits priced, so its latents are its own); ``codec-v0.8``: the codec model before that
#: (the default encoder with a codec-tuned decoder), kept so that the files made with it and its predecessors
#: decode exactly as they were made.
SHIPPED_MODELS: dict[str, Path] = {"default": DEFAULT_MODEL_DIR, "codec": REPO_WEIGHTS / "codec",
                                   "codec-v0.8": REPO_WEIGHTS / "codec-v0.8"}
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
#: A training checkpoint folder holds these (written by :mod:`latentkit.train.checkpoint`).


def config_dict(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The full diffusers ``AutoencoderKL`` config for a named config (``tiny``, ``small``, ``sd``), a JSON
    file, or a model folder holding ``config.json`` (to copy an existing model's architecture)."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if name in CONFIGS:
        cfg = dict(CONFIGS[name])
    elif path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LatentkitError(f"cannot read config {path}: {str(e).splitlines()[0]}") from None
        if not isinstance(cfg, dict) or "block_out_channels" not in cfg:
            raise LatentkitError(f"{path} is not an AutoencoderKL config (no block_out_channels)")
    else:
        raise LatentkitError(f"unknown config '{name}': use one of {', '.join(CONFIGS)}, a config.json path "
                             "or a model folder")
    n = len(cfg["block_out_channels"])
    base = dict(in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", sample_size=256,
                down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n)
    base.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if not k.startswith("_")})
    return base


def make_vae(config: str | os.PathLike | dict[str, Any] = "tiny", seed: int | None = 0) -> AutoencoderKL:
    """A randomly initialised VAE of a named config (``tiny``, ``small``, ``sd``), a config.json or a dict."""
    from diffusers import AutoencoderKL

    cfg = config if isinstance(config, dict) else config_dict(config)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return AutoencoderKL(**cfg)
    except (TypeError, ValueError, IndexError) as e:  # unknown keys, channels not divisible by norm_num_groups, ...
        raise LatentkitError(f"invalid AutoencoderKL config: {str(e).splitlines()[0]}") from None


def load_vae(path_or_name: str | os.PathLike | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | str | None = None, allow_pickle: bool = False, *,
             torch_dtype: torch.dtype | str | None = None, standalone: bool = False) -> AutoencoderKL:
    """Load a KL autoencoder in eval mode, on `device` (default CPU) with weights of `dtype` (default float32).

    ``torch_dtype`` is diffusers' name for ``dtype`` (``load_vae(torch_dtype=torch.float16, device="cuda")``);
    both take a ``torch.dtype`` or a name (``"fp16"``, ``"bfloat16"``, ...). ``standalone``: return the
    inference-only :class:`latentkit.standalone.StandaloneAutoencoderKL` (same weights, same outputs, no diffusers
    import) where the config allows it (:func:`latentkit.standalone.supports`); diffusers' model otherwise.

    Accepts, in this order of checks:
      - ``None`` or ``"default"``: the shipped default weights in ``weights/default``; ``"codec"``: the shipped
        `.latent` codec's model in ``weights/codec``; ``"codec-v0.8"``: its predecessor (files made with it);
      - a diffusers model folder (``config.json`` + weights), or a pipeline folder with a ``vae/`` subfolder;
      - a latentkit training run folder or one of its checkpoint folders (the EMA weights are loaded);
      - a single file ``.safetensors`` with diffusers or SD/LDM keys (with or without ``first_stage_model.``);
      - a ``.ckpt``/``.pt``/``.pth`` pickle, only with ``allow_pickle=True`` (pickles can run code).
    """
    name = "default" if path_or_name is None else str(path_or_name)
    if name in SHIPPED_MODELS:
        path = SHIPPED_MODELS[name]
        if not (path / "config.json").is_file():
            raise LatentkitError(
                f"shipped '{name}' weights not found in {path} (a clone or wheel has them); pass --model, or make "
                "a model with `latentkit init-model --config tiny DIR`")
    else:
        path = Path(path_or_name).expanduser()
    if not path.exists():
        hint = " (named configs are for `latentkit init-model`)" if str(path_or_name) in CONFIGS else ""
        raise LatentkitError(f"model path {path} does not exist{hint}")
    try:
        vae = _load_any(path, allow_pickle, standalone)
    except LatentkitError:
        raise
    except Exception as e:  # corrupt or foreign files: one line, not a traceback
        raise LatentkitError(f"cannot load a VAE from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    vae.eval().requires_grad_(False)
    dtype = _dtype_arg(dtype, torch_dtype)
    if device is not None or dtype is not None:
        move(vae, device=device, dtype=dtype)
    return vae


_DTYPE_NAMES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
                "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _dtype_arg(dtype: torch.dtype | str | None, torch_dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise LatentkitError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; pass one of them")
    d = torch_dtype if dtype is None else dtype
    if isinstance(d, str):
        name = d.lower().removeprefix("torch.")
        if name not in _DTYPE_NAMES:
            raise LatentkitError(f"unknown dtype {d!r}: use one of {', '.join(_DTYPE_NAMES)} or a torch.dtype")
        d = _DTYPE_NAMES[name]
    return d


def move(vae: AutoencoderKL, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None) -> AutoencoderKL:
    """``vae.to(device, dtype)`` in place, without diffusers' warning about modules to keep in float32 (printed
    on every dtype cast, even though AutoencoderKL has none): torch's own ``Module.to``."""
    return torch.nn.Module.to(vae, device=device, dtype=dtype)


def _load_any(path: Path, allow_pickle: bool, standalone_ok: bool) -> AutoencoderKL:
    from safetensors.torch import load_file

    if path.is_dir():
        if (path / "vae" / "config.json").is_file():  # a pipeline folder
            path = path / "vae"
        ckpt = checkpoint.find(path)
        if ckpt is not None:
            cfg = json.loads((ckpt / checkpoint.CONFIG_FILE).read_text())
            return _from_weights(cfg, load_file(ckpt / checkpoint.EMA_FILE), standalone_ok, ckpt)
        if (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text())
            if standalone_ok and standalone.supports(cfg) and (path / WEIGHTS_FILE).is_file():
                return _from_weights(cfg, load_file(path / WEIGHTS_FILE), True, path)
            from diffusers import AutoencoderKL  # other weight files (.bin, variants), other architectures

            return AutoencoderKL.from_pretrained(path, local_files_only=True)
        raise LatentkitError(f"{path} is not a diffusers model folder, pipeline folder or latentkit run "
                             "(no config.json, vae/config.json or checkpoints/)")
    return _from_single_file(path, allow_pickle, standalone_ok)


def _from_weights(cfg: dict[str, Any], sd: dict[str, torch.Tensor], standalone_ok: bool, source: Path,
                  strict: bool = True) -> AutoencoderKL:
    """The model of config `cfg` with the diffusers-key weights `sd` (from `source`): the standalone network when
    allowed and the config is one it runs, diffusers' otherwise. ``strict``: unexpected weights are an error too."""
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if standalone_ok and standalone.supports(cfg):
        vae, missing, unexpected = standalone.StandaloneAutoencoderKL.from_state_dict(cfg, sd)
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(**cfg)
        missing, unexpected = vae.load_state_dict(sd, strict=False)
    if missing:
        raise LatentkitError(f"{source}: not a KL-VAE checkpoint ({len(missing)} weights missing, e.g. {missing[0]})")
    if strict and unexpected:
        raise LatentkitError(f"{source}: {len(unexpected)} weights the config has no place for, e.g. {unexpected[0]}")
    return vae


def _read_state_dict(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    if suffix in (".ckpt", ".pt", ".pth", ".bin"):
        if not allow_pickle:
            raise LatentkitError(f"{path} is a pickle checkpoint, which can run code when loaded; convert it to "
                                 ".safetensors or pass allow_pickle=True (CLI: --allow-pickle) if you trust it")
        sd = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        return sd
    raise LatentkitError(f"{path}: unknown model file type '{suffix}' (expected a folder, .safetensors or .ckpt)")


#: safetensors metadata key under which latentkit's single-file export stores the full config (JSON)
SINGLE_FILE_CONFIG_KEY = "latentkit_config"


def _stored_config(path: Path) -> dict[str, Any] | None:
    """The config a latentkit single-file export carries in its safetensors metadata, or None."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        text = (f.metadata() or {}).get(SINGLE_FILE_CONFIG_KEY)
    return json.loads(text) if text else None


def _from_single_file(path: Path, allow_pickle: bool, standalone_ok: bool) -> AutoencoderKL:
    # Not diffusers' AutoencoderKL.from_single_file: without a config= folder it fetches the architecture's
    # config from the hub, and a single file has none; the key conversion is diffusers' own
    # (convert_ldm_state_dict) and the config is read off the weights (infer_config). tests/test_pipeline.py
    # checks that from_single_file(config=...) gives the same model.
    sd = _read_state_dict(path, allow_pickle)
    if any(k.startswith("encoder.down_blocks.") for k in sd):
        diffusers_sd = sd
    else:
        diffusers_sd = convert_ldm_state_dict(sd)
    cfg = _stored_config(path) or infer_config(diffusers_sd)
    return _from_weights(cfg, diffusers_sd, standalone_ok, path, strict=False)


def convert_ldm_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an SD/LDM ``AutoencoderKL`` state dict (optionally prefixed ``first_stage_model.`` or ``vae.``,
    attention as 1x1 convs) to diffusers keys, using diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefixes = ("first_stage_model.", "vae.")
    vae_sd = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")):
            vae_sd[k] = v
    if "encoder.conv_in.weight" not in vae_sd:
        raise LatentkitError("not an SD/LDM VAE checkpoint: no encoder.conv_in.weight "
                             "(with or without the first_stage_model. prefix)")
    n = 1 + max(int(k.split(".")[2]) for k in vae_sd if k.startswith("encoder.down."))
    return convert_ldm_vae_checkpoint(vae_sd, {"down_block_types": [None] * n, "up_block_types": [None] * n})


def to_ldm_state_dict(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The model's weights under the original SD/LDM key layout (``encoder.down.0.block.0...``, ``mid.attn_1``
    with 1x1-conv attention weights, ``quant_conv``, ``post_quant_conv``): what ComfyUI and AUTOMATIC1111 load
    as a VAE file. The inverse of :func:`convert_ldm_state_dict` (diffusers ships only the LDM -> diffusers
    direction; the tests check that its converter gives these weights back exactly)."""
    n = len(vae.config.block_out_channels)
    rules = [
        (r"^(encoder)\.down_blocks\.(\d+)\.resnets\.", lambda m: f"{m[1]}.down.{m[2]}.block."),
        (r"^(encoder)\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"{m[1]}.down.{m[2]}.downsample."),
        (r"^(decoder)\.up_blocks\.(\d+)\.resnets\.", lambda m: f"{m[1]}.up.{n - 1 - int(m[2])}.block."),
        (r"^(decoder)\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"{m[1]}.up.{n - 1 - int(m[2])}.upsample."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", lambda m: f"{m[1]}.mid.attn_1."),
        (r"^(encoder|decoder)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out."),
    ]
    attn_names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in new:
            head, tail = new.split(".mid.attn_1.")
            name, leaf = tail.rsplit(".", 1)
            new = f"{head}.mid.attn_1.{attn_names[name]}.{leaf}"
            if leaf == "weight" and value.ndim == 2:  # linear -> 1x1 convolution
                value = value[:, :, None, None]
        out[new] = value.detach().cpu().contiguous()
    return out


def infer_config(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``AutoencoderKL`` config implied by a diffusers-key state dict.

    GroupNorm's group count is not visible in the weights; single files are SD-family, which use 32.
    """
    n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down_blocks."))
    channels = [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(n)]
    layers = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down_blocks.0.resnets."))
    cfg = dict(
        in_channels=sd["encoder.conv_in.weight"].shape[1], out_channels=sd["decoder.conv_out.weight"].shape[0],
        block_out_channels=channels, layers_per_block=layers, latent_channels=sd["decoder.conv_in.weight"].shape[1],
        norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        use_quant_conv="quant_conv.weight" in sd, use_post_quant_conv="post_quant_conv.weight" in sd,
        mid_block_add_attention=any(k.startswith("encoder.mid_block.attentions.") for k in sd),
        scaling_factor=0.18215 if channels == [128, 256, 512, 512] else 1.0,
    )
    return cfg


def save_vae(vae: AutoencoderKL, out_dir: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that stock
    ``AutoencoderKL.from_pretrained`` loads. Written to a temporary folder, then renamed into place."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"{out} exists and is not a folder; choose another output path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private (0700)
        model = vae if dtype is None else _copy_as(vae, dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        cfg = json.loads((tmp / "config.json").read_text())
        if cfg.pop("_name_or_path", None) is not None:  # where it was loaded from: a local path, not shipped
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if out.exists():
            keep = [p for p in out.iterdir() if p.name not in ("config.json", WEIGHTS_FILE)]
            for p in keep:  # e.g. MODEL_CARD.md stays
                shutil.move(str(p), tmp / p.name)
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _copy_as(vae: AutoencoderKL, dtype: torch.dtype) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    clone = AutoencoderKL.from_config(vae.config)
    clone.load_state_dict(vae.state_dict())
    return move(clone, dtype=dtype)


def weights_sha256(vae: AutoencoderKL, prefixes: tuple[str, ...] = ("",)) -> str:
    """sha256 (hex) over the weights as fp32, keys sorted: the same for a model loaded in fp16 or fp32.
    ``prefixes``: only the weights whose names start with one of them (e.g. :data:`DECODING_WEIGHTS`)."""
    h = hashlib.sha256()
    for k, v in sorted(vae.state_dict().items()):
        if k.startswith(prefixes):
            h.update(k.encode())
            h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


#: the weights that turn a latent into pixels: all a `.latent` file needs
DECODING_WEIGHTS = ("post_quant_conv.", "decoder.")

#: `.latent` model ids of earlier shipped versions, by the sha256 (:func:`weights_sha256` of
#: :data:`DECODING_WEIGHTS`) of their decoding weights: a version that changed only the encoder keeps the decoder,
#: so a model with those decoding weights decodes those files exactly as their own model did.
EARLIER_IDS: dict[str, tuple[str, ...]] = {
    # v0.7 (session 16) retrained only the encoder: files of v0.6 (default) and of the codec model built on it
    # (neither decoder is shipped since v0.8: the entries serve whoever loads v0.6 or v0.7 weights with --model)
    "cc205b584246b7ee91fb115b34917b4929e617c3cb843a853b95973161c2908a": ("7d81e03a2fe100e0",),  # default
    "789998b03305b8aed6c1bff8649428c5af17b2a2065f0ae798c24b4bc503b533": ("6f8314285ef27c6a",),  # codec
}

#: `.latent` model ids of earlier shipped versions whose decoder a later version fine-tuned without changing the
#: latent space (its encoder moved little), by the sha256 of the later version's decoding weights: their files
#: decode with it to nearly the picture their own model made, not bit for bit (`latentkit decode` says so).
FINE_TUNED_FROM: dict[str, tuple[str, ...]] = {
    # v0.9 (sessions 21 and 23) two more joint cycles from v0.8: files of v0.6, v0.7 and v0.8 (default)
    "580a4c35beb3ecbf7142a4d953a8ecfadfd864b54264cca472f7cd8708a8c474": ("7d81e03a2fe100e0", "fd379d0b239d0033",
                                                                         "06b44a177d979a99"),
    # v0.8 (session 17) trained encoder and decoder together at lr 3e-5 from v0.7: files of v0.6 and v0.7 (default;
    # v0.8's decoder is not shipped since v0.9: the entry serves whoever loads v0.8 weights with --model)
    "94a608ccf14b783bcc7f2cb66cbc5a94cf91fc2c5137d39c227f4f3eb2e8c88e": ("7d81e03a2fe100e0", "fd379d0b239d0033"),
    # and its codec decoder (weights/codec-v0.8), tuned again on v0.7's quantized latents: files of the codec model
    # of v0.6 and of v0.7
    "eeae4f7eed1c5196a62b071dcd7a22c2153a99473cd007e667595125251e1ab7": ("6f8314285ef27c6a", "9f428bb0ca37cbaa"),
    # (the session-19 codec model has no entry: its encoder moved the latent space, weights/codec/README.md)
}


def model_id(vae: AutoencoderKL) -> bytes:
    """The 8-byte id of a model's weights that `.latent` files carry (first 8 bytes of :func:`weights_sha256`).

    Computed once per model object and cached on it: do not change the weights of a model after asking."""
    cached = getattr(vae, "_latentkit_model_id", None)
    if cached is None:
        cached = bytes.fromhex(weights_sha256(vae))[:8]
        vae._latentkit_model_id = cached
    return cached


def _decoding_sha256(vae: AutoencoderKL) -> str:
    """:func:`weights_sha256` of the :data:`DECODING_WEIGHTS`, computed once per model object and cached on it."""
    cached = getattr(vae, "_latentkit_decoding_sha256", None)
    if cached is None:
        cached = vae._latentkit_decoding_sha256 = weights_sha256(vae, DECODING_WEIGHTS)
    return cached


def decodes_ids(vae: AutoencoderKL) -> set[bytes]:
    """The model ids of the `.latent` files this model decodes as their own model did: its :func:`model_id`, and
    those of earlier versions with the same decoding weights (:data:`EARLIER_IDS`)."""
    return {model_id(vae), *map(bytes.fromhex, EARLIER_IDS.get(_decoding_sha256(vae), ()))}


def succeeds_ids(vae: AutoencoderKL) -> set[bytes]:
    """The model ids of the `.latent` files this model decodes in their own latent space but not bit for bit: those
    of earlier versions whose decoder it fine-tuned (:data:`FINE_TUNED_FROM`)."""
    return set(map(bytes.fromhex, FINE_TUNED_FROM.get(_decoding_sha256(vae), ())))


def reads_ids(vae: AutoencoderKL) -> set[bytes]:
    """Every model id whose `.latent` files this model decodes without ``force_model``: :func:`decodes_ids` (the
    same picture) and :func:`succeeds_ids` (the picture of a fine-tuned decoder)."""
    return decodes_ids(vae) | succeeds_ids(vae)


_SHIPPED_LOADED: dict[str, AutoencoderKL] = {}


def _shipped(name: str) -> AutoencoderKL | None:
    """The shipped model `name`, loaded once per process (its standalone network), or None when absent."""
    if name not in _SHIPPED_LOADED and (SHIPPED_MODELS[name] / "config.json").is_file():
        _SHIPPED_LOADED[name] = load_vae(name, standalone=True)
    return _SHIPPED_LOADED.get(name)


def shipped_ids() -> dict[str, bytes]:
    """The 8-byte :func:`model_id` of each shipped model (:data:`SHIPPED_MODELS`) that is present, by name.

    Each is loaded once per process and shared between callers (:func:`shipped_model`): do not change its weights."""
    return {name: model_id(vae) for name in SHIPPED_MODELS if (vae := _shipped(name)) is not None}


def shipped_model(model_id_: bytes) -> AutoencoderKL | None:
    """The shipped model whose weights have this 8-byte :func:`model_id` (or decode its files: :func:`decodes_ids`;
    failing that, the one whose decoder was fine-tuned from that model's: :func:`succeeds_ids`), or None (see
    :func:`shipped_ids`).

    Loads them one by one, the codec's model first (what `.latent` files name unless made with another), so a
    file of the codec's model loads one model, not all."""
    names = sorted(SHIPPED_MODELS, key=lambda n: n != "codec")
    for ids in (decodes_ids, succeeds_ids):
        for name in names:
            vae = _shipped(name)
            if vae is not None and model_id_ in ids(vae):
                return vae
    return None


def num_parameters(vae: torch.nn.Module) -> int:
    """The total number of parameters."""
    return sum(p.numel() for p in vae.parameters())


def pad_to_multiple(images: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Pad N x C x H x W on the bottom/right by edge replication up to multiples of `multiple`."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return torch.nn.functional.pad(images, (0, pw, 0, ph), mode="replicate")


def centre_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central `height` x `width` pixels of N x C x H x W images (sides larger than the image keep it whole)."""
    h, w = images.shape[-2:]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return images[..., top:top + height, left:left + width]


def downsampling_factor(vae: AutoencoderKL) -> int:
    """Spatial downsampling of a VAE: 2 ** (number of blocks - 1), i.e. 8 for the SD layout."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae: AutoencoderKL, width: int, height: int) -> tuple[int, int, int]:
    """C x h x w of the latent the model makes for an image of width x height pixels (after :func:`encode`
    pads it to a multiple of the downsampling factor)."""
    f = downsampling_factor(vae)
    return vae.config.latent_channels, math.ceil(height / f), math.ceil(width / f)


#: what :func:`encode` takes as images: a tensor, a PIL image, a file path, or a list of PIL images / paths
ImageInput = Union[torch.Tensor, "PIL.Image.Image", str, os.PathLike, Sequence[Any]]


def as_batch(images: ImageInput) -> torch.Tensor:
    """Images as an N x 3 x H x W float tensor in [0, 1].

    Takes an N x 3 x H x W or 3 x H x W tensor (returned as it is, batched), a :class:`latentkit.io.Image`, a
    PIL image, an image file path, or a list of PIL images / paths of one size. Files and PIL images go through :func:`latentkit.io.from_pil`:
    EXIF orientation applied, grayscale expanded to RGB, alpha dropped (the codec keeps alpha; the model
    encodes colour only).
    """
    from PIL import Image as PILImage

    from . import io as lkio

    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise LatentkitError(f"images must be N x 3 x H x W (or 3 x H x W), got shape {tuple(images.shape)}")
        return images
    if isinstance(images, lkio.Image):
        return images.batch()
    items = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise LatentkitError("no images given")
    batch = []
    for item in items:
        if isinstance(item, PILImage.Image):
            batch.append(lkio.from_pil(item).batch())
        elif isinstance(item, (str, os.PathLike)):
            batch.append(lkio.read_image(item).batch())
        else:
            raise LatentkitError(f"cannot encode a {type(item).__name__}: pass a tensor, a PIL image or a file path")
    sizes = {tuple(b.shape[-2:]) for b in batch}
    if len(sizes) > 1:
        raise LatentkitError(f"images in one batch must share a size, got {sorted(sizes)} (H, W)")
    return torch.cat(batch)


def posterior(vae: AutoencoderKL, images: ImageInput, *, fast: bool = True, tile: bool | None = None):
    """The posterior q(z | x) of images in [0, 1] (any input :func:`as_batch` takes) as a
    :class:`latentkit.standalone.DiagonalGaussian` (the attributes and random draws of diffusers'
    ``DiagonalGaussianDistribution``): ``.mean``, ``.logvar``, ``.std`` are unscaled N x C x ceil(H/8) x ceil(W/8)
    (float32, or the model's dtype if wider), ``.sample(generator)`` draws from it, ``.kl()`` is the KL to N(0, I).

    Sizes that are not multiples of 8 are padded by edge replication. ``fast``: the fast CPU path of
    :mod:`latentkit.runtime` (bf16 where supported; deterministic per machine and thread count), which runs a
    diffusers model through :func:`latentkit.standalone.view_of` (its own weights, the same bits, fewer memory
    passes); ``fast=False``: diffusers' own forward in the model's dtype. ``tile``: encode in
    tiles (:mod:`latentkit.tiling`); None tiles automatically when an untiled pass would pass the memory
    budget (:func:`latentkit.tiling.should_tile`).
    """
    from . import runtime, tiling

    p = next(vae.parameters())
    x = pad_to_multiple(as_batch(images).to(p.device, p.dtype) * 2 - 1, downsampling_factor(vae))
    if tile is None:
        tile = tiling.should_tile(vae, *x.shape[-2:], op="encode")
    fast = fast and runtime.strided_convs_safe(x.shape[-1], downsampling_factor(vae))
    net = (standalone.view_of(vae) if fast else None) or vae
    with runtime.inference(p.device, fast):
        x = runtime.prepare_input(x, fast)
        post = tiling.encode_tiled(net, x) if tile else net.encode(x).latent_dist
        params = torch.cat([post.mean, post.logvar], 1)
    # cloned outside inference mode: ordinary tensors that callers may edit in place (e.g. rounding)
    dtype = torch.promote_types(p.dtype, torch.float32)
    return standalone.DiagonalGaussian(params.to(dtype).clone(memory_format=torch.contiguous_format))


def encode(vae: AutoencoderKL, images: ImageInput, sample: bool = False,
           generator: torch.Generator | None = None, *, fast: bool = True, tile: bool | None = None,
           with_std: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] (N x 3 x H x W, any H, W >= 1) -> unscaled latents N x C x ceil(H/8) x ceil(W/8).

    `images` may also be a PIL image, a file path, or a list of them (see :func:`as_batch`).

    Returns the posterior mean, or a draw from the posterior with ``sample=True`` (:func:`posterior` has the
    whole distribution). Sizes that are not multiples of 8 are padded by edge replication; crop the decoded
    image back with ``[..., :H, :W]``. ``fast`` and ``tile`` as in :func:`posterior`. Latents are float32 (or
    the model's dtype if wider). ``with_std``: return ``(latents, std)``, std being the posterior's standard
    deviation (same shape and dtype).
    """
    post = posterior(vae, images, fast=fast, tile=tile)
    z = (post.sample(generator) if sample else post.mean).contiguous()  # .mean is a view into the parameters
    return (z, post.std.contiguous()) if with_std else z


def decode(vae: AutoencoderKL, latents: torch.Tensor, *, fast: bool = True, tile: bool | None = None,
           output_type: str = "pt") -> torch.Tensor | list:
    """Unscaled latents N x C x h x w (or C x h x w) -> images in [0, 1], N x 3 x fh x fw (f: the downsampling
    factor; float32, clamped).

    ``fast`` and ``tile`` as in :func:`encode` (the tiling threshold applies to the output size).
    ``output_type``: ``"pt"`` (the tensor) or ``"pil"`` (a list of 8-bit RGB PIL images), as in diffusers.
    """
    if output_type not in ("pt", "pil"):
        raise LatentkitError(f"output_type must be 'pt' or 'pil', got {output_type!r}")
    if latents.dim() == 3:
        latents = latents[None]
    from . import runtime, tiling

    p = next(vae.parameters())
    z = latents.to(p.device, p.dtype)
    if tile is None:
        f = downsampling_factor(vae)
        tile = tiling.should_tile(vae, f * z.shape[-2], f * z.shape[-1], op="decode")
    net = (standalone.view_of(vae) if fast else None) or vae
    with runtime.inference(p.device, fast):
        z = runtime.prepare_input(z, fast)
        x = tiling.decode_tiled(net, z) if tile else net.decode(z).sample
    x = ((x.float() + 1) / 2).clamp_(0, 1).contiguous()
    if output_type == "pil":
        from . import io as lkio

        return [lkio.to_pil(lkio.Image(rgb)) for rgb in x]
    return x


def reconstruct(vae: AutoencoderKL, images: ImageInput, sample: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode then decode, cropped back to the input size. Images in [0, 1] in and out (N x 3 x H x W; any
    input :func:`encode` takes)."""
    images = as_batch(images)
    h, w = images.shape[-2:]
    return decode(vae, encode(vae, images, sample=sample, generator=generator))[..., :h, :w]
