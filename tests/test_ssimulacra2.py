"""SSIMULACRA2 against scores of the reference tool (tests/data/ssimulacra2), plus the butteraugli wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentkit.errors import LatentkitError
from latentkit.metrics.butteraugli import (
    MISSING,
    butteraugli,
    butteraugli_available,
    parse_output,
)
from latentkit.metrics.ssimulacra2 import recursive_gaussian_kernel, ssimulacra2

GOLDEN = Path(__file__).resolve().parent / "data" / "ssimulacra2"
SPEC = json.loads((GOLDEN / "golden.json").read_text())
PAIRS = SPEC["pairs"]
TOLERANCE = 0.5


def load(name: str) -> torch.Tensor:
    """A golden PNG as a 3 x H x W float tensor in [0, 1]."""
    a = np.array(Image.open(GOLDEN / name).convert("RGB"))
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


def score(ref: str, dist: str) -> float:
    return ssimulacra2(load(ref), load(dist)).item()


def test_golden_folder_is_complete():
    assert len(PAIRS) >= 8
    assert SPEC["reference_tool"]["commit"]
    for p in PAIRS:
        assert (GOLDEN / p["ref"]).is_file() and (GOLDEN / p["dist"]).is_file()


@pytest.mark.parametrize("pair", PAIRS, ids=[p["dist"] for p in PAIRS])
def test_matches_reference_tool(pair):
    ours = score(pair["ref"], pair["dist"])
    assert abs(ours - pair["reference_score"]) <= TOLERANCE, (ours, pair["reference_score"])


def test_identical_images_score_100():
    x = load("k01_ref.png")
    assert ssimulacra2(x, x).item() == pytest.approx(100.0, abs=1e-6)
    small = load("k05_ref.png")  # 8 x 8, the smallest size accepted
    assert ssimulacra2(small, small).item() == pytest.approx(100.0, abs=1e-6)


def test_stronger_jpeg_scores_lower():
    q10, q40, q80 = (score("k01_ref.png", f"k01_jpeg_q{q}.png") for q in (10, 40, 80))
    assert q10 < q40 < q80 < 100


def test_stronger_blur_scores_lower():
    assert score("k15_ref.png", "k15_blur_r2.5.png") < score("k15_ref.png", "k15_blur_r1.png")


def test_batch_equals_single_calls_and_3d_input():
    refs = torch.stack([load("k01_ref.png")] * 3)
    dists = torch.stack([load(f"k01_jpeg_q{q}.png") for q in (10, 40, 80)])
    batched = ssimulacra2(refs, dists)
    assert batched.shape == (3,)
    singles = torch.cat([ssimulacra2(r, d) for r, d in zip(refs, dists)])
    assert torch.allclose(batched, singles, rtol=0, atol=1e-9)
    assert ssimulacra2(refs[0], dists[0]).shape == (1,)


def test_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(LatentkitError, match="same size"):
        ssimulacra2(x, torch.rand(1, 3, 16, 17))
    with pytest.raises(LatentkitError, match="at least 8 x 8"):
        ssimulacra2(torch.rand(3, 7, 16), torch.rand(3, 7, 16))
    with pytest.raises(LatentkitError, match="at least 8 x 8"):
        ssimulacra2(torch.rand(2, 3, 16, 5), torch.rand(2, 3, 16, 5))
    with pytest.raises(LatentkitError, match="RGB"):
        ssimulacra2(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(LatentkitError) as err:
        ssimulacra2(x, torch.rand(1, 3, 8, 8))
    assert "\n" not in str(err.value)


def test_blur_kernel_is_normalised_and_symmetric():
    k = recursive_gaussian_kernel(1.5)
    assert len(k) == 9
    assert sum(k) == pytest.approx(1.0, abs=1e-12)
    assert k == tuple(reversed(k)) and max(k) == k[4]


def test_butteraugli_output_parsing():
    assert parse_output("6.1739935875\n3-norm: 1.821853\n") == {"max": 6.1739935875, "pnorm3": 1.821853}
    with pytest.raises(LatentkitError):
        parse_output("garbage")


def test_butteraugli_missing_tool_message(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not butteraugli_available()
    with pytest.raises(LatentkitError) as err:
        butteraugli(GOLDEN / "k15_ref.png", GOLDEN / "k15_ref.png")
    assert str(err.value) == MISSING


needs_butteraugli = pytest.mark.skipif(
    not butteraugli_available(),
    reason="butteraugli_main is not on PATH (Debian package libjxl-devtools: apt-get install libjxl-devtools)")


@needs_butteraugli
def test_butteraugli_identity_and_direction():
    ref = GOLDEN / "k15_ref.png"
    same = butteraugli(ref, ref)
    assert same["max"] == pytest.approx(0.0, abs=1e-6) and same["pnorm3"] == pytest.approx(0.0, abs=1e-6)
    mild = butteraugli(ref, GOLDEN / "k15_blur_r1.png")
    strong = butteraugli(ref, GOLDEN / "k15_blur_r2.5.png")
    assert 0 < mild["pnorm3"] < strong["pnorm3"]
    assert 0 < mild["max"] < strong["max"]
    assert mild["pnorm3"] <= mild["max"]


@needs_butteraugli
def test_butteraugli_tensors_match_files():
    ref, dist = load("k15_ref.png"), load("k15_blur_r1.png")
    from_files = butteraugli(GOLDEN / "k15_ref.png", GOLDEN / "k15_blur_r1.png")
    assert butteraugli(ref, dist[None]) == from_files
    with pytest.raises(LatentkitError):
        butteraugli(ref, load("k01_ref.png"))
