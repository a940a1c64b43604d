"""latentkit.io: every Pillow mode in, the documented mode out; sizes, alpha, 16-bit, EXIF, ICC, bombs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageCms

from latentkit import io
from latentkit.errors import LatentkitError

SIZES = [(1, 1), (7, 13), (9, 17)]  # (height, width), none a multiple of 8 but the first
RNG = np.random.default_rng(0)


def make(mode: str, h: int, w: int) -> PILImage.Image:
    """A random Pillow image of `mode` (RGB, RGBA, L, LA, 1, I;16; P: 16-colour palette; P+t: with a
    transparent index)."""
    if mode in ("P", "P+t"):
        im = PILImage.fromarray(RNG.integers(0, 16, (h, w), dtype=np.uint8)).convert("L").convert("P")
        im.putpalette(list(RNG.integers(0, 256, 768, dtype=np.uint8)))
        if mode == "P+t":
            im.info["transparency"] = int(np.asarray(im)[0, 0])
        return im
    if mode == "I;16":
        return PILImage.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "1":
        return PILImage.fromarray(RNG.integers(0, 2, (h, w), dtype=np.uint8) * 255).convert("1")
    return PILImage.frombytes(mode, (w, h), RNG.integers(0, 256, (h, w, len(mode)), dtype=np.uint8).tobytes())


# source mode -> (mode written back, grayscale, bit depth, has alpha)
MODES = {
    "RGB": ("RGB", False, 8, False),
    "RGBA": ("RGBA", False, 8, True),
    "L": ("L", True, 8, False),
    "LA": ("LA", True, 8, True),
    "1": ("L", True, 8, False),
    "P": ("RGB", False, 8, False),
    "P+t": ("RGBA", False, 8, True),
    "I;16": ("I;16", True, 16, False),
}


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("mode", list(MODES))
def test_modes_round_trip(tmp_path, mode, h, w):
    src = make(mode, h, w)
    f = tmp_path / "in.png"
    src.save(f)
    img = io.read_image(f)
    out_mode, gray, depth, has_alpha = MODES[mode]
    assert img.rgb.shape == (3, h, w) and img.rgb.dtype == torch.float32
    assert 0 <= float(img.rgb.min()) and float(img.rgb.max()) <= 1
    assert (img.grayscale, img.bit_depth, img.alpha is not None) == (gray, depth, has_alpha)

    out = io.write_image(img, tmp_path / "out.png", inputs=(f,))
    back = PILImage.open(out)
    assert back.mode == out_mode and back.size == (w, h)
    # without a model in between, reading and writing loses nothing
    expected = src.convert("RGBA" if mode == "P+t" else "RGB") if mode in ("P", "P+t") else src.convert(out_mode)
    assert np.array_equal(np.asarray(back), np.asarray(expected))
    if has_alpha:
        assert img.alpha.dtype == np.uint8
        assert np.array_equal(img.alpha, np.asarray(expected)[..., -1])


def test_sixteen_bit_precision_and_eight_bit_formats(tmp_path):
    a = np.array([[0, 1, 257 * 100 + 7], [32768, 65534, 65535]], dtype=np.uint16)
    f = tmp_path / "g16.png"
    PILImage.fromarray(a).save(f)
    img = io.read_image(f)
    assert np.array_equal((img.rgb[0].double().numpy() * 65535).round().astype(np.uint16), a)
    assert np.array_equal(np.asarray(PILImage.open(io.write_image(img, tmp_path / "o.tif"))), a)
    # formats without 16-bit grayscale get the same image at 8 bits (scaled, not clipped)
    eight = np.asarray(PILImage.open(io.write_image(img, tmp_path / "o.bmp")))
    assert eight.dtype == np.uint8 and np.array_equal(eight, np.round(a / 65535 * 255).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    f = tmp_path / "c.jpg"
    PILImage.new("CMYK", (11, 5), (0, 255, 255, 0)).save(f, quality=100)
    img = io.read_image(f)
    assert img.rgb.shape == (3, 5, 11) and not img.grayscale and img.icc_profile is None
    assert torch.allclose(img.rgb[:, 2, 5], torch.tensor([1.0, 0.0, 0.0]), atol=0.03)  # CMY(0,1,1) is red
    assert PILImage.open(io.write_image(img, tmp_path / "c.png")).mode == "RGB"


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((2, 3, 3), np.uint8)
    a[0, 0] = (255, 0, 0)  # red in the top-left corner of the stored 3 wide x 2 high pixels
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    f = tmp_path / "o.png"
    PILImage.fromarray(a).save(f, exif=exif.tobytes())
    img = io.read_image(f)
    assert img.rgb.shape == (3, 3, 2)  # displayed 2 wide x 3 high
    assert torch.equal(img.rgb[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))  # top-left went to top-right


def test_icc_profile_carried(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    f = tmp_path / "icc.png"
    make("RGB", 4, 5).save(f, icc_profile=icc)
    img = io.read_image(f)
    assert img.icc_profile == icc
    assert PILImage.open(io.write_image(img, tmp_path / "o.png")).info.get("icc_profile") == icc


def test_alpha_dropped_only_where_the_format_has_none(tmp_path):
    f = tmp_path / "a.png"
    make("RGBA", 8, 8).save(f)
    img = io.read_image(f)
    assert PILImage.open(io.write_image(img, tmp_path / "o.jpg")).mode == "RGB"
    assert PILImage.open(io.write_image(img, tmp_path / "o.webp")).mode == "RGBA"


def test_decompression_bomb(tmp_path):
    f = tmp_path / "big.png"
    make("RGB", 10, 10).save(f)
    with pytest.raises(LatentkitError, match="--max-pixels") as e:
        io.read_image(f, max_pixels=99)
    assert "\n" not in str(e.value)
    assert io.read_image(f, max_pixels=100).width == 10
    assert io.read_image(f, max_pixels=None).height == 10
    assert PILImage.MAX_IMAGE_PIXELS == io.DEFAULT_MAX_PIXELS  # the global is restored


def test_read_errors(tmp_path):
    with pytest.raises(LatentkitError, match="does not exist"):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(LatentkitError, match="cannot read image"):
        io.read_image(tmp_path / "t.png")


def test_write_is_atomic_and_safe(tmp_path):
    f = tmp_path / "in.png"
    make("LA", 3, 3).save(f)
    img = io.read_image(f)
    before = f.read_bytes()
    with pytest.raises(LatentkitError, match="refusing to overwrite"):
        io.write_image(img, tmp_path / "." / "in.png", inputs=(f,))
    assert f.read_bytes() == before
    with pytest.raises(LatentkitError, match="unknown output image type"):
        io.write_image(img, tmp_path / "o.xyz")
    with pytest.raises(LatentkitError, match="output folder"):
        io.write_image(img, tmp_path / "nope" / "o.png")
    with pytest.raises(LatentkitError, match="cannot write a LA image as BMP"):
        io.write_image(img, tmp_path / "o.bmp")
    out = io.write_image(img, tmp_path / "o.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "o.png"]  # no temporary files left
    assert out.stat().st_mode & 0o777 == 0o666 & ~io.current_umask()
    assert os.access(out, os.R_OK)


def test_reading_in_threads_leaves_pillows_limit_alone(tmp_path):
    """--jobs reads images in threads: Pillow's global bomb limit, lifted while a header is read, always comes back."""
    from concurrent.futures import ThreadPoolExecutor

    f = tmp_path / "a.png"
    make("RGB", 64, 48).save(f)
    with ThreadPoolExecutor(8) as pool:
        want = io.read_image(f).rgb.shape
        assert all(im.rgb.shape == want for im in pool.map(lambda _: io.read_image(f, max_pixels=None), range(200)))
    assert PILImage.MAX_IMAGE_PIXELS == io.DEFAULT_MAX_PIXELS


def test_pngs_are_written_at_the_fast_zlib_level(tmp_path):
    """io.PNG_COMPRESS_LEVEL (4) is what the file's zlib stream says (FLEVEL 1: levels 2-5; Pillow's default 6
    would say 2), and the pixels come back exactly."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 40, 56, generator=g)
    out = io.write_image(io.Image(rgb), tmp_path / "a.png")
    data = out.read_bytes()
    idat = data.index(b"IDAT") + 4
    assert data[idat] & 0x0F == 8 and data[idat + 1] >> 6 == 1
    back = io.read_image(out).rgb
    assert torch.equal((back * 255).round(), (rgb * 255).round())


def test_image_format_needs_only_the_common_plugins():
    """A .png output name is resolved without registering every Pillow plugin (that took ~0.1 s of each
    command); other suffixes still resolve, and an unknown one is a user error."""
    import subprocess
    import sys

    code = ("import sys; from latentkit.io import image_format; print(image_format('out.PNG'), "
            "'PIL.WebPImagePlugin' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["PNG", "False"]
    assert io.image_format("a.webp") == "WEBP" and io.image_format("b.jpeg") == "JPEG"
    with pytest.raises(LatentkitError, match="unknown output image type"):
        io.image_format("c.xyz")
