"""Training: losses, the loop on a micro model, exact resume, checkpoints, data loading, the CLI."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentkit.cli import main
from latentkit.errors import LatentkitError
from latentkit.model import load_vae, save_vae
from latentkit.train.data import RandomCrops
from latentkit.train.losses import PatchDiscriminator, adaptive_weight, generator_adv_loss, kl_divergence, kl_loss
from latentkit.train import checkpoint
from latentkit.train.ema import EMA
from latentkit.train.args import TrainArgs
from latentkit.train.loop import Trainer, steps_for_budget, train

from conftest import MICRO_CONFIG


@pytest.fixture(scope="module")
def micro_config(tmp_path_factory) -> str:
    from latentkit.model import config_dict

    cfg = config_dict("tiny")
    cfg.update(MICRO_CONFIG)
    path = tmp_path_factory.mktemp("cfg") / "micro.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Three smooth 48 x 64 images (one in a subfolder) and one unreadable .png."""
    root = tmp_path_factory.mktemp("imgs")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png"]):
        a = np.stack([np.sin(xx * (3 + i) + rng.uniform(0, 6)), np.cos(yy * (2 + i)), xx * yy], -1)
        Image.fromarray(((a + 1) / 2 * 255).clip(0, 255).astype(np.uint8)).save(root / name)
    (root / "broken.png").write_bytes(b"not an image at all")
    return root


def _args(micro_config: str, data: Path, out: Path, **kw) -> TrainArgs:
    base = dict(data=str(data), out=str(out), config=micro_config, batch_size=2, crop=32, lr=1e-3, warmup=0,
                perceptual_weight=0.0, disc_start=10**9, disc_width=8, disc_layers=2, mixed_precision="no",
                channels_last=False, ckpt_every=1000, log_every=1, threads=1)
    base.update(kw)
    return TrainArgs(**base)


def _losses(run: Path) -> list[tuple[int, str]]:
    """(step, loss) of every training row of a run's log.csv, in file order."""
    with open(run / "log.csv") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r["loss"]]


# -- losses --------------------------------------------------------------------------------------------------
def test_kl_closed_form():
    one, zero = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    assert torch.allclose(kl_divergence(one, zero), torch.full_like(one, 0.5))  # mu=1, sigma=1: 0.5 nats
    assert torch.equal(kl_divergence(zero, zero), zero)  # mu=0, sigma=1: 0
    logvar = torch.full_like(one, math.log(4.0))  # mu=0, sigma=2: 0.5 * (4 - 1 - ln 4)
    assert kl_loss(zero, logvar).item() == pytest.approx(0.5 * (3 - math.log(4.0)), rel=1e-6)


def test_free_bits_floor_per_channel():
    mean = torch.zeros(2, 4, 3, 3, requires_grad=True)
    mean.data[:, 0] = 2.0  # channel 0: 2 nats per element; channels 1-3: 0
    kl = kl_loss(mean, torch.zeros_like(mean), free_bits=0.5)
    assert kl.item() == pytest.approx((2.0 + 3 * 0.5) / 4)
    kl.backward()
    assert mean.grad[:, 1:].abs().sum() == 0  # under the floor: no pull towards the prior
    assert mean.grad[:, 0].abs().sum() > 0


def test_adaptive_weight_finite_positive(micro_vae):
    vae = type(micro_vae).from_config(micro_vae.config)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    disc = PatchDiscriminator(width=8, n_layers=2)
    w = adaptive_weight((x - rec).abs().mean(), generator_adv_loss(disc(rec)), vae.decoder.conv_out.weight)
    assert torch.isfinite(w) and w.item() > 0 and not w.requires_grad


# -- the loop --------------------------------------------------------------------------------------------------
def test_few_steps_on_one_batch_lower_rec_loss(micro_config, image_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(_args(micro_config, image_dir, tmp_path / "run", sample_posterior=False,
                                disc_start=3))
    x = trainer.data.batch(2)
    logs = [trainer.train_step(x) for _ in range(12)]
    assert logs[-1]["rec"] < 0.8 * logs[0]["rec"]
    assert all(math.isfinite(entry["d_weight"]) and entry["d_weight"] > 0 for entry in logs[3:])  # GAN from step 3


def test_disc_warmup_trains_the_discriminator_before_the_autoencoder_sees_it(micro_config, image_dir, tmp_path):
    """--disc-warmup 2 with --disc-start 1: step 0 has no GAN at all, steps 1-2 update the discriminator only (no
    adversarial term in the autoencoder's loss), from step 3 on both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(_args(micro_config, image_dir, tmp_path / "run", disc_start=1, disc_warmup=2))
    x = trainer.data.batch(2)
    d0 = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    logs = [trainer.train_step(x) for _ in range(4)]
    assert ["d" in e for e in logs] == [False, True, True, True]
    assert ["g" in e for e in logs] == [False, False, False, True]
    assert any(not torch.equal(v, trainer.disc.state_dict()[k]) for k, v in d0.items())


def test_decoder_only_freezes_encoder(micro_config, image_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(_args(micro_config, image_dir, tmp_path / "run", decoder_only=True))
    enc = {k: v.clone() for k, v in trainer.vae.encoder.state_dict().items()}
    dec = trainer.vae.decoder.conv_out.weight.detach().clone()
    for _ in range(2):
        trainer.train_step(trainer.data.batch(2))
    assert all(torch.equal(v, trainer.vae.encoder.state_dict()[k]) for k, v in enc.items())
    assert not torch.equal(dec, trainer.vae.decoder.conv_out.weight)


def test_encoder_only_freezes_decoder_and_refuses_what_needs_it(micro_config, image_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(_args(micro_config, image_dir, tmp_path / "run", encoder_only=True,
                                sample_posterior=False))
    dec = {k: v.clone() for k, v in trainer.vae.decoder.state_dict().items()}
    pq = [p.detach().clone() for p in trainer.vae.post_quant_conv.parameters()]
    enc = trainer.vae.encoder.conv_in.weight.detach().clone()
    for _ in range(2):
        trainer.train_step(trainer.data.batch(2))
    assert all(torch.equal(v, trainer.vae.decoder.state_dict()[k]) for k, v in dec.items())
    assert all(torch.equal(a, b) for a, b in zip(pq, trainer.vae.post_quant_conv.parameters()))
    assert not torch.equal(enc, trainer.vae.encoder.conv_in.weight)  # gradients flow through the frozen decoder
    for bad, match in ((dict(decoder_only=True), "exclude each other"), (dict(disc_start=0), "adversarial")):
        with pytest.raises(LatentkitError, match=match):
            Trainer(_args(micro_config, image_dir, tmp_path / "bad", encoder_only=True, **bad))


def test_resume_continues_exactly(micro_config, image_dir, tmp_path):
    """A run that died after step 5 but whose last checkpoint is step 3, resumed to step 8: the same losses
    as one uninterrupted run (posterior samples, denoising noise, GAN on), and one log row per step."""
    kw = dict(ckpt_every=3, disc_start=2, kl_weight=1e-2, denoise_sigma=0.05)
    split = tmp_path / "split"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_args(micro_config, image_dir, tmp_path / "whole", steps=8, **kw))
        train(_args(micro_config, image_dir, split, steps=5, **kw))
        (split / "checkpoints" / "latest").write_text("step_0000003")  # as if killed before step 6
        train(TrainArgs(out=str(split), steps=8), resume=True)
    assert _losses(split) == _losses(tmp_path / "whole")
    assert [s for s, _ in _losses(split)] == list(range(1, 9))


def test_steps_for_budget():
    # 40 steps took 20 s, 0.5 s a step from here: 95% of 120 s leaves 94 s = 188 more steps
    assert steps_for_budget(40, 20.0, 0.5, 120.0, cap=10**6) == 228
    assert steps_for_budget(40, 20.0, 0.5, 120.0, cap=100) == 100  # --steps caps it
    assert steps_for_budget(40, 200.0, 0.5, 120.0, cap=10**6) == 40  # over budget already: stop here


def test_time_budget_sizes_the_run_and_resume_keeps_it(micro_config, image_dir, tmp_path):
    """A budget already spent when the speed is measured (step 40) ends the run there; the checkpoint holds
    the sized run (steps 40, budget off), so a resume does not re-size it."""
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_args(micro_config, image_dir, run, steps=500, time_budget=1e-6, ckpt_every=1000, log_every=10))
    assert [s for s, _ in _losses(run)] == [10, 20, 30, 40]
    ck = checkpoint.load(checkpoint.latest(run))["trainer"]["args"]
    assert ck["steps"] == 40 and ck["time_budget"] == 0.0


def test_ema_update_is_the_moving_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=0)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # decay min(0.9, 2 / 1) = 0.9
    assert torch.allclose(ema.shadow["weight"], 0.9 * before["weight"] + 0.1 * model.weight)
    assert torch.allclose(ema.shadow["bias"], before["bias"])


def test_checkpoint_loads_and_exports(micro_config, image_dir, tmp_path):
    from diffusers import AutoencoderKL

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_args(micro_config, image_dir, run, steps=2, ckpt_every=1, keep=1))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000002"]
    vae = load_vae(run)
    stock = AutoencoderKL.from_pretrained(save_vae(vae, tmp_path / "export"), local_files_only=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae(x, sample_posterior=False).sample, stock(x, sample_posterior=False).sample)


def test_init_from_a_model_folder_checkpoints_and_validates(micro_config, image_dir, tmp_path, micro_vae):
    """Fine-tuning from a diffusers folder (whose config carries a Path in ``_name_or_path``) checkpoints, and its
    validation writes a row and a grid."""
    init = save_vae(micro_vae, tmp_path / "init")
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_args(micro_config, image_dir, run, steps=2, ckpt_every=1, init=str(init), val=str(image_dir / "sub"),
                    val_every=2))
    assert json.loads((run / "checkpoints" / "step_0000002" / "config.json").read_text())["block_out_channels"] \
        == list(MICRO_CONFIG["block_out_channels"])
    assert load_vae(run).config.latent_channels == 4
    with open(run / "log.csv") as f:
        assert [r["step"] for r in csv.DictReader(f) if r["val_psnr"]] == ["2"]
    assert (run / "val_step0000002.png").is_file()


def test_unreadable_file_skipped_with_one_warning(image_dir):
    with pytest.warns(UserWarning) as record:
        crops = RandomCrops(image_dir, crop=32)
    hits = [w for w in record if "broken.png" in str(w.message)]
    assert len(hits) == 1 and len(crops) == 3  # recursive: sub/c.png is found
    b = crops.batch(4)
    assert b.shape == (4, 3, 32, 32) and 0 <= b.min() and b.max() <= 1


# -- CLI --------------------------------------------------------------------------------------------------------
def test_cli_train_with_validation_then_eval_model(micro_config, image_dir, tmp_path, capsys):
    run, val = tmp_path / "run", image_dir / "sub"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["train", "--data", str(image_dir), "--val", str(val), "--config", micro_config, "--out",
                   str(run), "--steps", "2", "--batch-size", "2", "--crop", "32", "--perceptual-weight", "0",
                   "--val-every", "2", "--mixed-precision", "no", "--threads", "1"])
    assert rc == 0
    with open(run / "log.csv") as f:
        val_rows = [r for r in csv.DictReader(f) if r["val_psnr"]]
    assert len(val_rows) == 1 and 0 < float(val_rows[0]["val_psnr"]) < 100
    assert (run / "val_step0000002.png").is_file() and (run / "checkpoints" / "best").is_file()

    capsys.readouterr()
    assert main(["eval-model", "--model", str(run), "--data", str(val), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in result["images"]] == ["c.png"]
    assert result["mean"]["psnr"] == pytest.approx(result["images"][0]["psnr"])
    assert 0 < result["mean"]["lpips_squeeze"] and -1 <= result["mean"]["ssim"] <= 1
    assert main(["eval-model", "--model", str(run), "--data", str(val)]) == 0
    assert "c.png" in capsys.readouterr().out
    # against itself as the baseline: the same figures, no image better or worse
    assert main(["eval-model", "--model", str(run), "--baseline", str(run), "--data", str(val), "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["baseline"]["mean"] == both["mean"] == result["mean"]
    assert both["comparison"]["psnr"] == {"mean": result["mean"]["psnr"], "baseline": result["mean"]["psnr"],
                                          "diff": 0.0, "better": 0, "worse": 0, "n": 1}


def test_compare_results_counts_by_each_metrics_direction():
    """Higher PSNR is better, lower LPIPS is better; a missing value (MS-SSIM of a small image) is not counted."""
    from latentkit.bench.evaluate import compare_results, format_comparison
    from latentkit.metrics.compare import mean_of

    def res(rows):
        metrics = ["psnr", "ms_ssim", "lpips_squeeze"]
        return {"metrics": metrics, "images": rows, "mean": mean_of(rows, metrics)}

    base = res([{"file": "a", "psnr": 20.0, "ms_ssim": 0.90, "lpips_squeeze": 0.2},
                {"file": "b", "psnr": 30.0, "ms_ssim": None, "lpips_squeeze": 0.1}])
    new = res([{"file": "a", "psnr": 21.0, "ms_ssim": 0.95, "lpips_squeeze": 0.3},
               {"file": "b", "psnr": 29.5, "ms_ssim": None, "lpips_squeeze": 0.1}])
    c = compare_results(new, base)
    assert c["psnr"]["diff"] == pytest.approx(0.25) and (c["psnr"]["better"], c["psnr"]["worse"]) == (1, 1)
    assert (c["lpips_squeeze"]["better"], c["lpips_squeeze"]["worse"], c["lpips_squeeze"]["n"]) == (0, 1, 2)
    assert c["ms_ssim"]["diff"] is None and (c["ms_ssim"]["better"], c["ms_ssim"]["n"]) == (1, 1)
    table = format_comparison(c, "new", "base")
    assert "+0.25" in table and "1 / 1 of 2" in table and "training loss" in table


def test_cli_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("latentkit: error:") for line in err)


def test_cli_resume_without_data_and_existing_run_needs_overwrite(micro_config, image_dir, tmp_path, capsys):
    """`train --resume RUN --steps N` needs no --data (the run keeps its own); `train --out RUN` over an
    existing run is refused unless --overwrite, which restarts at step 0 with a fresh log."""
    run = tmp_path / "run"
    first = ["train", "--data", str(image_dir), "--config", micro_config, "--out", str(run), "--batch-size", "2",
             "--crop", "32", "--perceptual-weight", "0", "--mixed-precision", "no", "--threads", "1",
             "--log-every", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(first + ["--steps", "2"]) == 0
        assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
        assert [s for s, _ in _losses(run)] == [1, 2, 3]
        capsys.readouterr()
        assert main(first + ["--steps", "1"]) == 2
        err = capsys.readouterr().err
        assert "already holds a training run" in err and "--overwrite" in err and len(err.splitlines()) == 1
        assert [s for s, _ in _losses(run)] == [1, 2, 3]  # the refused run changed nothing
        assert checkpoint.latest(run).name == "step_0000003"
        assert main(first + ["--steps", "1", "--overwrite"]) == 0
    assert [s for s, _ in _losses(run)] == [1]
    assert checkpoint.latest(run).name == "step_0000001"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000001"]


def test_checkpoint_trainer_state_loads_without_pickle(micro_config, image_dir, tmp_path):
    """trainer.pt holds only tensors and plain values (read with weights_only=True); a crafted one that would
    run code on unpickling is refused with a one-line error, and the code does not run."""
    from latentkit.errors import LatentkitError

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(_args(micro_config, image_dir, run, steps=1))
    ck = checkpoint.latest(run)
    assert torch.load(ck / checkpoint.TRAINER_FILE, weights_only=True)["step"] == 1
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"step": 1, "x": Payload()}, ck / checkpoint.TRAINER_FILE)
    with pytest.raises(LatentkitError, match="pickled objects") as e:
        checkpoint.load(ck)
    assert "\n" not in str(e.value) and not marker.exists()


# -- a decoder tuned for the codec ------------------------------------------------------------------------------
def test_codec_quantizer_rounds_as_the_codec_does():
    from latentkit.codec import quant
    from latentkit.train.codec_noise import CodecQuantizer

    gains = np.array([1e-3, 2e-3, 4e-3, 3e-3])
    qz = CodecQuantizer(gains, (20, 20), clean=0.0)
    z = torch.randn(3, 4, 5, 6) * 0.5
    g = torch.Generator().manual_seed(1)
    steps = qz.steps(3, torch.Generator().manual_seed(1))
    out = qz(z, g)
    for i in range(3):  # each sample: the codec's own quantize/dequantize at the exponents of its steps
        e = np.round(8 * np.log2(steps[i].numpy().astype(np.float64))).astype(np.int64)
        assert np.array_equal(quant.step_sizes(e), steps[i].numpy())
        want = quant.dequantize(quant.quantize(z[i].numpy(), e), e)
        assert np.array_equal(out[i].numpy(), want)
    # the jitter moves steps around the high-rate rule, within the RD search's window
    base = quant.step_exponents(gains, 20)
    e_all = np.round(8 * np.log2(qz.steps(200, torch.Generator().manual_seed(2)).numpy().astype(np.float64)))
    assert np.abs(e_all - base).max() <= 24 and (e_all != base).mean() > 0.5
    clean = CodecQuantizer(gains, (1, 80), clean=1.0)
    assert torch.equal(clean(z), z)


def test_codec_qualities_need_the_posterior_mean(micro_config, image_dir, tmp_path):
    from latentkit.errors import LatentkitError

    with pytest.raises(LatentkitError, match="no-sample-posterior"):
        Trainer(_args(micro_config, image_dir, tmp_path / "a", codec_qualities="1-80"))
    with pytest.raises(LatentkitError, match="codec-qualities"):
        Trainer(_args(micro_config, image_dir, tmp_path / "b", codec_qualities="80", decoder_only=True,
                      sample_posterior=False))


def test_codec_quantization_passes_gradients_straight_through_to_a_training_encoder():
    """Without --decoder-only the encoder learns through the codec's rounding: the forward values are the
    rounded ones, the gradient that of the identity; a latent that needs no gradient gets the rounded values
    bit for bit."""
    from latentkit.train.codec_noise import CodecQuantizer

    qz = CodecQuantizer(np.ones(4), (10, 10), clean=0.0)
    z = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = qz(z, torch.Generator().manual_seed(4))
    exact = qz(z.detach(), torch.Generator().manual_seed(4))
    assert not torch.equal(exact, z.detach())
    torch.testing.assert_close(out.detach(), exact, rtol=0, atol=1e-6)
    (out * torch.arange(4.0)[None, :, None, None]).sum().backward()
    assert torch.equal(z.grad, torch.arange(4.0)[None, :, None, None].expand_as(z))


def test_the_rate_loss_prices_bits_at_the_codec_slope_and_skips_clean_crops():
    from latentkit.codec import rate
    from latentkit.train.codec_noise import CodecQuantizer, rate_loss

    z = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(5)) * 3
    steps = torch.tensor([[0.5] * 4, [float("inf")] * 4])
    zq = CodecQuantizer.quantize(z, steps)
    levels = torch.tensor([0.1, 0.0], dtype=torch.float64)
    got = rate_loss(zq, steps, levels, pixels=48 * 48)
    want = 4 * rate.rd_lambda(0.1) * float(rate.bits(zq[:1] / 0.5)) / (48 * 48) / 2  # the batch mean of two
    assert abs(float(got) - want) < 1e-6 * want
    assert float(rate_loss(zq, steps, levels * 2, pixels=48 * 48)) == pytest.approx(4 * want, rel=1e-6)
    assert float(rate_loss(zq[1:], steps[1:], levels[1:], pixels=48 * 48)) == 0.0


def test_a_codec_rate_weight_puts_the_estimated_bits_in_the_loss(micro_config, image_dir, tmp_path):
    from latentkit.errors import LatentkitError

    kw = dict(sample_posterior=False, codec_qualities="1-40", codec_clean=0.0, rec_loss="l2")
    with pytest.raises(LatentkitError, match="needs --codec-qualities"):
        Trainer(_args(micro_config, image_dir, tmp_path / "a", codec_rate_weight=1.0, sample_posterior=False))
    with pytest.raises(LatentkitError, match="not --decoder-only"):
        Trainer(_args(micro_config, image_dir, tmp_path / "b", codec_rate_weight=1.0, decoder_only=True, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priced = Trainer(_args(micro_config, image_dir, tmp_path / "c", codec_rate_weight=1.0, **kw))
        plain = Trainer(_args(micro_config, image_dir, tmp_path / "d", **kw))
    x = priced.data.batch(2)
    torch.manual_seed(7)
    logs = priced.train_step(x)
    assert float(logs["rate"]) > 0
    assert float(logs["loss"]) > float(logs["rec"]) + float(logs["rate"]) - 1e-6  # the rate is in the loss
    torch.manual_seed(7)
    assert "rate" not in plain.train_step(x)


def test_codec_tuning_feeds_the_decoder_quantized_latents_and_resumes_with_the_same_gains(
        micro_config, image_dir, tmp_path):
    kw = dict(decoder_only=True, sample_posterior=False, codec_qualities="1-40", codec_clean=0.0, ckpt_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(_args(micro_config, image_dir, tmp_path / "run", steps=2, **kw))
        gains = trainer.args.extra["codec_gains"]
        assert len(gains) == 4 and all(g > 0 for g in gains)
        x = trainer.data.batch(2) * 2 - 1
        seen = []
        first = trainer.vae.post_quant_conv or trainer.vae.decoder  # what decode() feeds the latent into
        hook = first.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
        trainer.train_step((x + 1) / 2)
        hook.remove()
        mean = trainer.vae.encode(x).latent_dist.mean
        assert not torch.allclose(seen[0], mean, atol=1e-4)  # rounded, not the posterior mean itself
        for c in range(4):  # per sample and channel, the values lie on a lattice of one step
            u = seen[0][0, c].flatten().unique()
            if len(u) > 1:
                step = u.diff().min()
                assert torch.allclose(u / step, (u / step).round(), atol=1e-3)
        trainer.fit()
        resumed = Trainer(TrainArgs(out=str(tmp_path / "run"), steps=3), resume=True)
    assert resumed.args.extra["codec_gains"] == gains


def test_sigkill_during_a_checkpoint_write_resumes_to_the_same_weights():
    """scripts/soak_train_kill.py with one real SIGKILL while a checkpoint is being written: the run resumes
    from the last complete checkpoint and ends bit-exact with an unkilled run (the README's figure runs 20)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "soak_train_kill.py"
    p = subprocess.run([sys.executable, str(script), "--kills", "1", "--steps", "12", "--phases", "checkpoint",
                        "--json"], capture_output=True, text=True, timeout=600)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["by_phase"] == {"checkpoint": 1}, result
    assert result["bit_exact_weights"] and result["same_losses"] and not result["stale_temp_folders"], result
    assert p.returncode == 0


def test_combine_weights_takes_the_encoder_side_and_config_from_one_model_and_the_decoder_from_the_other(
        micro_vae, tmp_path):
    """scripts/combine_weights.py (how weights/codec follows a new default encoder): encoder, quant_conv and
    scaling_factor of --encoder, post_quant_conv and decoder of --decoder; another architecture is refused."""
    import subprocess
    import sys

    from latentkit.model import load_vae, make_vae, save_vae

    other = make_vae(dict(micro_vae.config) | {"scaling_factor": 0.5}, seed=7)
    save_vae(micro_vae, tmp_path / "enc")
    save_vae(other, tmp_path / "dec")
    script = Path(__file__).resolve().parent.parent / "scripts" / "combine_weights.py"
    run = [sys.executable, str(script), str(tmp_path / "out"), "--encoder", str(tmp_path / "enc"), "--decoder"]
    p = subprocess.run([*run, str(tmp_path / "dec"), "--dtype", "fp32"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out, enc, dec = (load_vae(tmp_path / n) for n in ("out", "enc", "dec"))
    assert out.config.scaling_factor == enc.config.scaling_factor != dec.config.scaling_factor
    for k, v in out.state_dict().items():
        src = dec if k.startswith(("decoder.", "post_quant_conv.")) else enc
        assert torch.equal(v, src.state_dict()[k]), k
    save_vae(make_vae(dict(micro_vae.config) | {"latent_channels": 8}, seed=7), tmp_path / "wide")
    p = subprocess.run([*run, str(tmp_path / "wide")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "different architectures" in p.stderr and "Traceback" not in p.stderr


def test_grow_depth_adds_a_resnet_per_block_and_keeps_the_function(micro_vae, tmp_path):
    """scripts/grow_depth.py: layers_per_block + 1 (encoder and decoder), every old weight where it was, the new
    resnets the identity (zero second convolution), so the grown model encodes and decodes exactly as before."""
    import subprocess
    import sys

    from latentkit.model import load_vae, save_vae

    save_vae(micro_vae, tmp_path / "src")
    script = Path(__file__).resolve().parent.parent / "scripts" / "grow_depth.py"
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "src"), str(tmp_path / "deep")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    src, deep = load_vae(tmp_path / "src"), load_vae(tmp_path / "deep")
    assert deep.config.layers_per_block == src.config.layers_per_block + 1
    assert sum(v.numel() for v in deep.parameters()) > sum(v.numel() for v in src.parameters())
    sd = deep.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in src.state_dict().items())
    new_conv2 = [k for k in sd if k not in src.state_dict() and ".conv2." in k]
    assert new_conv2 and all(not sd[k].any() for k in new_conv2)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = src.encode(x).latent_dist.mean
        assert torch.equal(deep.encode(x).latent_dist.mean, z)
        assert torch.equal(deep.decode(z).sample, src.decode(z).sample)
    # train_default's joint-grown phase puts exactly the new resnets at its higher learning rate
    import importlib.util

    from latentkit.train.loop import param_groups

    spec = importlib.util.spec_from_file_location("train_default", script.parent / "train_default.py")
    train_default = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_default)
    fast, rest = param_groups(deep.requires_grad_(True), train_default.JOINT_GROWN["lr_scale"])
    new_params = {k for k in sd if k not in src.state_dict()}
    names = {id(v): k for k, v in deep.named_parameters()}
    assert fast["lr_scale"] > 1 and {names[id(v)] for v in fast["params"]} == new_params
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "src"), str(tmp_path / "deep")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "exists" in p.stderr and "Traceback" not in p.stderr


def test_lr_scale_splits_the_parameters_into_groups_the_schedule_scales(micro_vae):
    """--lr-scale REGEX=FACTOR: matching parameters (the first rule that matches) learn at FACTOR x the rate;
    a rule that matches nothing or is not REGEX=FACTOR is a one-line error."""
    from latentkit.errors import LatentkitError
    from latentkit.train.loop import param_groups

    m = micro_vae.requires_grad_(True)
    groups = param_groups(m, r"^decoder\.=10; ^encoder\.conv_in\.=0.5")
    names = {id(p): n for n, p in m.named_parameters()}
    assert [g["lr_scale"] for g in groups] == [10.0, 0.5, 1.0]
    assert all(names[id(p)].startswith("decoder.") for p in groups[0]["params"])
    assert {names[id(p)] for p in groups[1]["params"]} == {"encoder.conv_in.weight", "encoder.conv_in.bias"}
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert [g["lr_scale"] for g in param_groups(m, "")] == [1.0]
    for bad in ("decoder", "^nothing=2", "x=fast"):
        with pytest.raises(LatentkitError, match="--lr-scale"):
            param_groups(m, bad)
