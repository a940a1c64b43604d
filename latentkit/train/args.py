"""Every training knob, with its default and its help text in one place: :class:`TrainArgs`.

``latentkit train`` makes one flag of each field (``--batch-size`` for ``batch_size``) with the field's help;
the trainer (:mod:`latentkit.train.loop`) reads the same object. No torch here, so ``latentkit train --help``
stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: steps over which `time_budget` measures the speed of a step (after the first, slower ones)
BUDGET_PROBE = (10, 40)


def knob(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A TrainArgs field: its default, its help (units and ranges) and, for a string, its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainArgs:
    """The arguments of a training run (see each field's help; ``latentkit train --help`` prints them)."""

    data: str = knob("",
        "folder of training images, searched recursively (a resumed run keeps its own unless given again)")
    out: str = knob("", "run folder (checkpoints, log.csv, validation grids)")
    val: str | None = knob(None, "folder of validation images, at full resolution (none: no validation)")
    config: str = knob("tiny", "architecture: tiny | small | sd | path to an AutoencoderKL config.json")
    init: str | None = knob(None, "start from these weights (anything load_vae accepts): fine-tuning")
    decoder_only: bool = knob(False,
        "freeze the encoder and quant_conv so the latent space stays as it is (as SD's ft-MSE VAE)")
    encoder_only: bool = knob(False,
        "freeze the decoder and post_quant_conv and fine-tune the encoder alone: it learns latents that the fixed "
        "decoder turns into better pictures (the amortization gap), and every stored latent still decodes as before")
    codec_qualities: str = knob("",
        "decode latents quantized as the .latent codec does, at a quality drawn per crop from this inclusive range, "
        "e.g. 1-80 (with --decoder-only a decoder tuned for the codec; without it the encoder learns through the "
        "rounding too, straight-through; needs --no-sample-posterior; '': off)")
    codec_clean: float = knob(0.1, "with --codec-qualities: the fraction of crops decoded unquantized")
    codec_rate_weight: float = knob(0.0,
        "with --codec-qualities, the encoder training and --rec-loss l2: add the estimated bits per pixel of the "
        "quantized latents (latentkit.codec.rate), priced at the codec's rate-distortion slope at each crop's "
        "quality, times this (1: the codec's own trade; 0: off)")
    steps: int = knob(10000, "total optimizer steps of the run (a resumed run continues up to this)")
    time_budget: float = knob(0.0,
        f"minutes of training to fit the run into: the speed measured over steps "
        f"{BUDGET_PROBE[0]}-{BUDGET_PROBE[1]} sets --steps (then at most --steps) and so the cosine schedule (0: "
        f"off; validation time not counted)")
    batch_size: int = knob(8, "crops per step (per process)")
    crop: int = knob(128, "crop side in pixels (a multiple of 8)")
    lr: float = knob(5e-4, "peak AdamW learning rate")
    min_lr_ratio: float = knob(0.1, "with --schedule cosine: the final learning rate as a fraction of --lr")
    schedule: str = knob("constant", "learning rate after warm-up: constant | cosine", choices=("constant", "cosine"))
    warmup: int = knob(500, "linear learning-rate warm-up, in steps")
    lr_scale: str = knob("",
        "REGEX=FACTOR[;REGEX=FACTOR...]: trainable parameters whose names match REGEX (re.search; the first match "
        "wins) learn at FACTOR x the learning rate, e.g. new layers of a grown model (scripts/grow_depth.py) beside "
        "trained ones ('': all at --lr)")
    weight_decay: float = knob(0.01, "AdamW weight decay")
    grad_clip: float = knob(1.0, "clip the autoencoder's gradient norm to this (0: off)")
    rec_loss: str = knob("l1", "pixel loss: l1 | l2 (per pixel and channel, images in [-1, 1])", choices=("l1", "l2"))
    perceptual_weight: float = knob(1.0, "weight of the LPIPS term (0: off)")
    perceptual_start: int = knob(0, "step at which the LPIPS term switches on")
    lpips_net: str = knob("squeeze",
        "LPIPS backbone: squeeze (shipped) | alex | vgg (need `latentkit fetch`)", choices=("squeeze", "alex", "vgg"))
    kl_weight: float = knob(1e-6, "weight of the KL term, in nats per latent element (a larger value is a beta-VAE)")
    kl_warmup: int = knob(0, "steps over which the KL weight ramps up from 0 (0: no ramp)")
    free_bits: float = knob(0.0,
        "nats per latent element and channel left unpenalised (against posterior collapse; 0: off)")
    disc_start: int = knob(50000, "step at which the PatchGAN adversarial term switches on")
    disc_weight: float = knob(0.5, "factor on the adaptive adversarial weight")
    disc_warmup: int = knob(0,
        "steps the discriminator trains alone from --disc-start before its term reaches the autoencoder (so the "
        "first adversarial gradients come from a discriminator that already tells real from fake; 0: at once)")
    disc_lr: float = knob(2e-4, "discriminator learning rate")
    disc_width: int = knob(32, "discriminator channels in its first layer")
    disc_layers: int = knob(3, "discriminator strided layers")
    sample_posterior: bool = knob(True, "decode a posterior sample while training (--no-sample-posterior: the mean)")
    denoise_sigma: float = knob(0.0,
        "> 0: add Gaussian noise of this std (image range [0, 1]) to the input and reconstruct the clean image")
    ema_decay: float = knob(0.999,
        "decay of the exponential moving average of the weights (the EMA is what gets exported)")
    mixed_precision: str = knob("auto",
        "auto (bf16 autocast where the hardware has it) | bf16 | no", choices=("auto", "bf16", "no"))
    channels_last: bool = knob(True, "channels-last memory format (faster convolutions on most hardware)")
    compile: bool = knob(False, "torch.compile the autoencoder pass (slow start, faster steps)")
    seed: int = knob(0, "seed of the weights, crops and noise")
    ckpt_every: int = knob(500, "write a checkpoint every N steps")
    val_every: int = knob(1000,
        "validate on --val every N steps (PSNR and LPIPS at full resolution, CSV and PNG grid)")
    log_every: int = knob(25, "write the training losses to log.csv every N steps")
    keep: int = knob(3, "checkpoints to keep besides the best one")
    threads: int = knob(0, "torch CPU threads (0: torch's default)")
    extra: dict = field(default_factory=dict, metadata={
        "help": "free-form facts about the run kept in its checkpoints (e.g. the time budget that sized it)"})
