"""``latentkit encode-dataset`` and :mod:`latentkit.data`: sharding, geometry, resume, failures, interruption,
verification and reading back with LatentDataset. Tiny images and a ~0.1M-parameter model keep it fast."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image as PILImage

from latentkit import model as M
from latentkit.cli import main
from latentkit.data import LatentDataset
from latentkit.data import items as I
from latentkit.data import shards as S
from latentkit.data.geometry import cover_box, make_buckets, make_resize
from latentkit.data.loading import load_resized
from latentkit.errors import LatentkitError

SIZES = [(64, 40), (32, 32), (40, 56)]  # width, height: three aspect ratios


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory, micro_vae):
    return M.save_vae(micro_vae, tmp_path_factory.mktemp("models") / "micro")


@pytest.fixture
def src(tmp_path) -> Path:
    """12 small images (PNG and JPEG, in a subfolder too) and one file that is not an image."""
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        w, h = SIZES[i % 3]
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        PILImage.fromarray(a).save(folder / ("sub" if i % 2 else "") / f"im{i:02d}.{'jpg' if i % 4 == 0 else 'png'}")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def run(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    rc = main(argv + ["--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.strip().splitlines()[-1]) if rc == 0 else None), err


def encode_args(src: Path, out: Path, micro_dir: Path, *extra: str, size: str | None = "32",
                shard_size: int = 4) -> list[str]:
    return ["encode-dataset", str(src), "-o", str(out), "--model", str(micro_dir), "--shard-size", str(shard_size),
            "--batch-size", "1", "--workers", "0", *(["--size", size] if size else []), *extra]


def tokens(out: Path) -> dict[str, str]:
    return {p.name: json.loads(p.read_text())["token"] for p in sorted(out.glob("shard-*.json"))}


# -- assignment and geometry (no model) ------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n,shard_size", [(1, 4), (12, 4), (13, 4), (100, 7), (5, 1)])
def test_every_item_is_assigned_exactly_once(world, n, shard_size):
    shares = [I.rank_items(n, shard_size, r, world) for r in range(world)]
    flat = [i for s in shares for i in s]
    assert sorted(flat) == list(range(n))  # every item, none twice
    assert shares == [I.rank_items(n, shard_size, r, world) for r in range(world)]  # deterministic
    owners = {k: r for r in range(world) for k in I.rank_shards(I.num_shards(n, shard_size), r, world)}
    assert sorted(owners) == list(range(I.num_shards(n, shard_size)))  # each shard has one writer
    for k, r in owners.items():  # and a shard's items do not depend on the world size
        assert set(I.shard_items(k, n, shard_size)) <= set(shares[r])
    with pytest.raises(ValueError):
        I.rank_shards(4, world, world)


def test_geometry():
    assert cover_box(48, 40, (32, 32)) == (4.0, 0.0, 44.0, 40.0)
    assert cover_box(40, 80, (32, 32)) == (0.0, 20.0, 40.0, 60.0)
    crop = make_resize("32x16", multiple=8)
    assert crop.plan(100, 100) == ((32, 16), (0.0, 25.0, 100.0, 75.0))
    short = make_resize("32", "short-side", multiple=8)
    assert short.plan(100, 50)[0] == (64, 32) and short.plan(50, 130)[0] == (32, 80)  # 83.2 -> 80
    b = make_resize(None, buckets="32x32,48x32,32x48", multiple=8)
    assert b.plan(60, 40)[0] == (48, 32) and b.plan(41, 40)[0] == (32, 32) and b.plan(10, 40)[0] == (32, 48)
    gen = make_buckets(256, 8)
    assert (256, 256) in gen and all(w * h <= 256 * 256 and w % 32 == 0 and h % 32 == 0 for w, h in gen)
    assert all(max(w / h, h / w) <= 4 for w, h in gen) and {(h, w) for w, h in gen} == set(gen)
    for kw, match in [(dict(size="36"), "multiples"), (dict(size="0"), "S or WxH"), (dict(size="9x"), "S or WxH"),
                      (dict(size="32x16", resize="short-side"), "one side"),
                      (dict(size="32", buckets="256"), "without --size"), (dict(size=None, buckets="32,48"), "WxH")]:
        with pytest.raises(LatentkitError, match=match):
            make_resize(multiple=8, **kw)


def test_text_file_source_and_limit(tmp_path):
    (tmp_path / "a.png").touch()
    (tmp_path / "list.txt").write_text("# a cloud listing\na.png\n\n/abs/b.jpg\nc.png\n")
    assert I.list_sources(tmp_path / "list.txt") == [str(tmp_path / "a.png"), "/abs/b.jpg", str(tmp_path / "c.png")]
    assert I.list_sources(tmp_path / "list.txt", limit=2) == [str(tmp_path / "a.png"), "/abs/b.jpg"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(LatentkitError, match="names no files"):
        I.list_sources(tmp_path / "empty.txt")


def test_load_resized_crops_the_centre(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 255  # a white centre square of 40x40 between black sides
    PILImage.fromarray(a).save(tmp_path / "x.png")
    pixels, size, box, out = load_resized(str(tmp_path / "x.png"), make_resize("16", multiple=8))
    assert size == (80, 40) and box == (20.0, 0.0, 60.0, 40.0) and out == (16, 16)
    assert pixels.shape == (3, 16, 16) and float(pixels.min()) > 0.9  # the white centre (Lanczos rings a little)
    big = np.random.default_rng(0).integers(0, 256, (400, 480, 3), dtype=np.uint8)
    PILImage.fromarray(big).save(tmp_path / "big.jpg", quality=95)  # decoded at reduced scale (draft)
    pixels, size, box, _ = load_resized(str(tmp_path / "big.jpg"), make_resize("32", multiple=8))
    assert size == (480, 400) and box == (40.0, 0.0, 440.0, 400.0) and pixels.shape == (3, 32, 32)


def test_encode_with_std_is_the_posterior_std(micro_vae, rand_images):
    z, std = M.encode(micro_vae, rand_images, with_std=True, fast=False)
    with torch.no_grad():
        posterior = micro_vae.encode(rand_images * 2 - 1).latent_dist
    assert torch.equal(z, M.encode(micro_vae, rand_images, fast=False))
    torch.testing.assert_close(z, posterior.mean)
    torch.testing.assert_close(std, posterior.std)
    assert std.shape == z.shape and bool((std > 0).all())


# -- the command --------------------------------------------------------------------------------------------------
def test_encode_read_back_and_failures(tmp_path, src, micro_dir, capsys):
    out = tmp_path / "out"
    rc, s, _ = run(encode_args(src, out, micro_dir, "--with-std", "--preview", "2"), capsys)
    assert rc == 0
    assert (s["items"], s["images"], s["failed"], s["shards"], s["encoded"]) == (13, 12, 1, 4, 12)
    assert s["bytes_written"] > 0 and s["preview_images"] == 2 and len(list((out / "preview").glob("*.png"))) == 2
    failed = (out / "failed.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{src / 'broken.png'}\t") and "Error" in failed[0]
    index = json.loads((out / "index.json").read_text())
    assert index["counts"]["images"] == 12 and index["model"]["id"] == M.model_id(M.load_vae(micro_dir)).hex()
    assert index["scaling_factor"] == 1.0 and index["with_std"] and index["groups"] == {"32x32": 12}

    ds = LatentDataset(out)
    assert len(ds) == 12 and sorted(it["index"] for it in ds.items) == [i for i in range(13) if i != 0]
    vae = M.load_vae(micro_dir)
    resize = make_resize("32", multiple=8)
    for i in range(len(ds)):  # the same tensors as encoding the (cropped) images directly
        x = load_resized(ds.items[i]["path"], resize)[0][None]
        z, std = M.encode(vae, x, with_std=True)
        item = ds[i]
        assert item["path"] == ds.items[i]["path"] and item["latents"].shape == (4, 4, 4)
        assert torch.equal(item["latents"], z[0]) and torch.equal(item["std"], std[0])
    w, h = ds.items[0]["size"]
    assert (w, h) in SIZES and len(ds.items[0]["crop"]) == 4
    scaled = LatentDataset(out, scaled=True, dtype=None)
    assert torch.equal(scaled[3]["latents"], ds[3]["latents"] * 1.0)
    torch.manual_seed(0)
    drawn = LatentDataset(out, sample=True)[3]["latents"]
    assert not torch.equal(drawn, ds[3]["latents"]) and "std" not in LatentDataset(out, sample=True)[3]


def test_resume_rewrites_only_the_deleted_shard(tmp_path, src, micro_dir, capsys):
    out = tmp_path / "out"
    assert run(encode_args(src, out, micro_dir), capsys)[0] == 0
    before = tokens(out)
    (out / "shard-000002.safetensors").unlink()
    rc, s, _ = run(encode_args(src, out, micro_dir), capsys)
    assert rc == 0 and (s["shards_written"], s["shards_kept"], s["encoded"]) == (1, 3, 4)
    after = tokens(out)
    assert [k for k in before if before[k] != after[k]] == ["shard-000002.json"]
    assert len(LatentDataset(out)) == 12
    rc, s, _ = run(encode_args(src, out, micro_dir), capsys)  # all done: nothing encoded
    assert rc == 0 and (s["shards_written"], s["encoded"], s["images"]) == (0, 0, 12) and tokens(out) == after


def test_interrupted_run_leaves_no_partial_shard(tmp_path, src, micro_dir, capsys, monkeypatch):
    out = tmp_path / "out"
    real_save, calls = S._save, []

    def save_then_interrupt(tensors, path, metadata):
        calls.append(path)
        if len(calls) == 2:  # the second shard: half a file, then Ctrl-C
            Path(path).write_bytes(b"\0" * 100)
            raise KeyboardInterrupt
        real_save(tensors, path, metadata)

    monkeypatch.setattr(S, "_save", save_then_interrupt)
    assert main(encode_args(src, out, micro_dir)) == 130
    capsys.readouterr()
    finals = sorted(p.name for p in out.glob("shard-*.safetensors"))
    assert "shard-000000.safetensors" in finals and "shard-000001.safetensors" not in finals
    for name in finals:  # what is there under a shard's name is whole
        assert not S.verify(out, json.loads((out / name).with_suffix(".json").read_text()))
    assert not list(out.glob(".*")) and not (out / "index.json").exists()
    with pytest.raises(LatentkitError, match="not a finished"):
        LatentDataset(out)
    # what kill -9 leaves: a temporary file, and a sidecar whose tensors never got their final name
    (out / ".shard-000001.safetensors.x1.tmp").write_bytes(b"\0" * 100)
    shutil.copy(out / "shard-000000.json", out / "shard-000003.json")
    monkeypatch.setattr(S, "_save", real_save)
    rc, s, _ = run(encode_args(src, out, micro_dir), capsys)
    assert rc == 0 and s["shards_kept"] == len(finals) and s["shards_written"] == 4 - len(finals)
    assert not list(out.glob(".*")) and len(LatentDataset(out)) == 12


def test_verify_finds_and_redoes_a_corrupt_shard(tmp_path, src, micro_dir, capsys):
    out = tmp_path / "out"
    assert run(encode_args(src, out, micro_dir), capsys)[0] == 0
    f = out / "shard-000001.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the tensor data: same size, same header
    f.write_bytes(bytes(data))
    rc, s, _ = run(encode_args(src, out, micro_dir), capsys)
    assert rc == 0 and s["shards_written"] == 0  # the quick check (size, header) cannot see it
    assert S.verify(out, json.loads((out / "shard-000001.json").read_text()))  # the full check does
    rc, s, err = run(encode_args(src, out, micro_dir, "--verify"), capsys)
    assert rc == 0 and s["shards_written"] == 1 and s["verified"] == 5 and "checksum" in err
    assert all(not S.verify(out, json.loads(p.read_text())) for p in out.glob("shard-*.json"))


def test_buckets_group_by_shape(tmp_path, src, micro_dir, capsys):
    out = tmp_path / "out"
    rc, s, _ = run(encode_args(src, out, micro_dir, "--buckets", "32x32,48x32,32x48", "--workers", "1",
                               "--batch-size", "3", "--dtype", "fp16", size=None), capsys)
    assert rc == 0 and s["images"] == 12
    ds = LatentDataset(out, dtype=None)
    assert set(ds.groups()) == {"32x32", "48x32", "32x48"}
    for i in range(len(ds)):
        w, h = map(int, ds.items[i]["group"].split("x"))
        assert ds[i]["latents"].shape == (4, h // 8, w // 8) and ds[i]["latents"].dtype == torch.float16
    loader = torch.utils.data.DataLoader(ds, batch_sampler=ds.batch_sampler(2, seed=1))
    seen = [int(i) for batch in loader for i in batch["index"]]
    assert sorted(seen) == sorted(it["index"] for it in ds.items) and len(loader) == len(list(loader))


def test_sample_draws_are_seeded(tmp_path, src, micro_dir, capsys):
    outs = [tmp_path / name for name in ("a", "b", "c")]
    for out, seed in zip(outs, ("1", "1", "2")):
        assert run(encode_args(src, out, micro_dir, "--sample", "--seed", seed, "--limit", "5"), capsys)[0] == 0
    a, b, c = (LatentDataset(out) for out in outs)
    assert a.index["kind"] == "sample" and len(a) == 4
    assert torch.equal(a[0]["latents"], b[0]["latents"]) and not torch.equal(a[0]["latents"], c[0]["latents"])


def test_refusals(tmp_path, src, micro_dir, capsys):
    out = tmp_path / "out"
    for extra, match in [(["--size", "36"], "multiples"), (["--batch-size", "0"], "at least 1"),
                         (["--with-std", "--sample"], "--with-std")]:
        assert main(encode_args(src, out, micro_dir) + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("latentkit: error:") and err.count("\n") == 1 and match in err, err
    assert not out.exists()  # nothing written for a refused run
    assert main(["encode-dataset", str(src), "-o", str(src / "lat"), "--model", str(micro_dir)]) == 2
    assert "inside the source" in capsys.readouterr().err
    assert run(encode_args(src, out, micro_dir), capsys)[0] == 0
    assert main(encode_args(src, out, micro_dir) + ["--dtype", "fp16"]) == 2  # another job's folder
    assert "--overwrite" in capsys.readouterr().err
    rc, s, _ = run(encode_args(src, out, micro_dir, "--dtype", "fp16", "--overwrite"), capsys)
    assert rc == 0 and s["shards_written"] == 4 and LatentDataset(out, dtype=None)[0]["latents"].dtype == torch.float16
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("no")
    assert main(encode_args(bad, tmp_path / "o2", micro_dir)) == 2  # nothing could be encoded
    assert "no image could be encoded" in capsys.readouterr().err
    assert (tmp_path / "o2" / "failed.txt").read_text().startswith(str(bad / "x.png"))


# -- real processes (slow) ----------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path, src, micro_dir, capsys):
    single = tmp_path / "single"
    assert run(encode_args(src, single, micro_dir), capsys)[0] == 0
    out = tmp_path / "two"
    with socket.socket() as sock:  # a free port for the processes' rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # `accelerate launch --cpu --num_processes 2` starts one process (accelerate's simple launcher; several CPU
    # processes need an MPI hostfile); its torchrun launcher starts two, which run on the CPU with no GPU visible
    r = subprocess.run([str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                        "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", str(port), "-m", "latentkit.cli",
                        *encode_args(src, out, micro_dir), "--json"],
                       capture_output=True, text=True, env=dict(_env(), CUDA_VISIBLE_DEVICES=""), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["images"] == 12 and summary["failed"] == 1
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("shard-*.json"))]
    assert [s["rank"] for s in sidecars] == [0, 1, 0, 1]  # shard k by process k % 2
    indices = [it["index"] for s in sidecars for it in s["items"]] + [f["index"] for s in sidecars for f in s["failed"]]
    assert sorted(indices) == list(range(13))  # every item exactly once
    a, b = LatentDataset(single), LatentDataset(out)
    assert [it["path"] for it in a.items] == [it["path"] for it in b.items]
    for i in range(len(a)):
        torch.testing.assert_close(a[i]["latents"], b[i]["latents"], atol=0.05, rtol=0.05)


@pytest.mark.slow
def test_kill_9_leaves_no_partial_shard(tmp_path, micro_dir, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "latentkit.cli", *encode_args(folder, out, micro_dir, size="64", shard_size=2)]
    p = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not len(list(out.glob("shard-*.safetensors"))) >= 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    finals = sorted(out.glob("shard-*.safetensors"))
    assert 3 <= len(finals) < 30 and not (out / "index.json").exists()
    for f in finals:  # every file under a shard's name is whole
        k = int(f.stem.split("-")[1])
        assert not S.verify(out, json.loads(S.sidecar_path(out, k).read_text()))
    rc, s, _ = run(encode_args(folder, out, micro_dir, size="64", shard_size=2), capsys)
    assert rc == 0 and s["shards_kept"] >= len(finals) and s["images"] == 60 and len(LatentDataset(out)) == 60
    assert not list(out.glob(".*"))
