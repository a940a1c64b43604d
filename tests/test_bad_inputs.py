"""Every bad input, named (issue 21 item 4): one table, :data:`CASES`, that the README's "**Bad input.**" table
copies row for row (:func:`test_readme_table_is_cases`).

Each row is run through the CLI in-process, in a fresh folder that holds the row's input and an empty ``out/``.
A refused input: the expected exit status, one line on stderr that names the problem (argparse's own errors
too), no traceback, and no file in the folder added, removed or changed: no output, no temporary
file, the input as it was. An accepted input: exit 0, the files it wrote and nothing else, and what the row asserts
about them.
"""

from __future__ import annotations

import os
import resource
import shlex
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from latentkit import model as M
from latentkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(21)


# -- how the inputs are made (each writes into the row's folder `d`; `ctx` has the models) ------------------------
def rgb_png(h: int, w: int, name: str = "a.png") -> Callable:
    def make(d: Path, ctx) -> None:
        PILImage.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / name)
    return make


def write(name: str, data: bytes) -> Callable:
    def make(d: Path, ctx) -> None:
        (d / name).write_bytes(data)
    return make


def folder(name: str, mode: int | None = None, then: Callable | None = None) -> Callable:
    def make(d: Path, ctx) -> None:
        (d / name).mkdir()
        if then:
            then(d, ctx)
        if mode is not None:
            (d / name).chmod(mode)
    return make


def both(*makers: Callable) -> Callable:
    def make(d: Path, ctx) -> None:
        for m in makers:
            m(d, ctx)
    return make


def nothing(d: Path, ctx) -> None:
    pass


def png16(d: Path, ctx) -> None:
    PILImage.fromarray(RNG.integers(0, 65536, (6, 9), dtype=np.uint16)).save(d / "a.png")


def png16_colour(d: Path, ctx) -> None:
    """A 16-bit RGB PNG, written by hand (Pillow writes 16-bit PNGs in grayscale only)."""
    h, w = 6, 9
    rows = RNG.integers(0, 65536, (h, w * 3), dtype=np.uint16).astype(">u2").tobytes()
    raw = b"".join(b"\0" + rows[i * w * 6:(i + 1) * w * 6] for i in range(h))  # filter 0 before each row
    (d / "a.png").write_bytes(png_bytes(w, h, 16, 2, zlib.compress(raw)))


def palette_with_transparency(d: Path, ctx) -> None:
    im = PILImage.fromarray(RNG.integers(0, 16, (6, 9), dtype=np.uint8)).convert("L").convert("P")
    im.putpalette(list(RNG.integers(0, 256, 768, dtype=np.uint8)))
    im.info["transparency"] = int(np.asarray(im)[0, 0])
    im.save(d / "a.png")


def cmyk_jpeg(d: Path, ctx) -> None:
    PILImage.new("CMYK", (11, 5), (0, 255, 255, 0)).save(d / "a.jpg", quality=100)


def exif_rotated_jpeg(d: Path, ctx) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored 8 wide x 4 high, shown 4 wide x 8 high
    PILImage.fromarray(RNG.integers(0, 256, (4, 8, 3), dtype=np.uint8)).save(d / "a.jpg", exif=exif.tobytes())


def png_bytes(w: int, h: int, depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG file from its header fields and its compressed pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_claiming(w: int, h: int) -> Callable:
    """A PNG whose header says w x h (8-bit RGB) and whose pixel data is one empty zlib stream."""
    return write("a.png", png_bytes(w, h, 8, 2, zlib.compress(b"")))


def latent_bytes(vae) -> bytes:
    from latentkit.codec import compress
    from latentkit.io import from_pil

    image = from_pil(PILImage.fromarray(np.random.default_rng(5).integers(0, 256, (16, 24, 3), dtype=np.uint8)))
    # quality 90: a payload of 20 bytes (quality 60 gave 8 on an AVX2 CPU's fp32 path, too few to damage one in
    # the middle and stay clear of the header)
    return compress(image, vae, quality=90)


def latent(damage: Callable[[bytes], bytes] = lambda b: b, other_model: bool = False) -> Callable:
    def make(d: Path, ctx) -> None:
        (d / "a.latent").write_bytes(damage(ctx.other_latent if other_model else ctx.latent))
    return make


def flip_payload_byte(data: bytes) -> bytes:
    from latentkit.codec import format

    payload = format.parse(data).payload
    at = data.rindex(payload) + len(payload) // 2
    assert len(payload) > 8 and 0 <= at < len(data) - 4  # a payload byte, not the header or the CRC
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


# -- what is checked of an accepted input (after exit 0 and "nothing but the outputs was written") ---------------
def decoded(d: Path, ctx) -> PILImage.Image:
    """`latentkit decode out/a.latent -o out/back.png`, opened."""
    assert main(["decode", "out/a.latent", "-o", "out/back.png", "--model", str(ctx.model_dir)]) == 0
    im = PILImage.open(d / "out" / "back.png")
    im.load()
    return im


def size_back(w: int, h: int) -> Callable:
    def check(d: Path, ctx, out: str) -> None:
        assert decoded(d, ctx).size == (w, h)
    return check


def sixteen_bit_back(d: Path, ctx, out: str) -> None:
    back = decoded(d, ctx)
    assert back.size == (9, 6) and back.mode.startswith("I")
    assert (d / "out" / "back.png").read_bytes()[24] == 16  # the IHDR's bit depth


def eight_bit_rgb_back(d: Path, ctx, out: str) -> None:
    back = decoded(d, ctx)
    assert back.size == (9, 6) and back.mode == "RGB"
    assert (d / "out" / "back.png").read_bytes()[24] == 8  # the IHDR's bit depth


def alpha_kept(d: Path, ctx, out: str) -> None:
    back = decoded(d, ctx)
    alpha = np.asarray(PILImage.open(d / "a.png").convert("RGBA"))[..., 3]
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], alpha) and 0 in alpha and 255 in alpha


def rgb_back(d: Path, ctx, out: str) -> None:
    back = decoded(d, ctx)
    assert back.mode == "RGB" and back.size == (11, 5)


def quality_100(d: Path, ctx, out: str) -> None:
    assert "quality 100" in out
    assert decoded(d, ctx).size == (7, 5)


# -- what happens during the command ------------------------------------------------------------------------------
def sigint_while_writing(monkeypatch) -> None:
    """A real SIGINT (Ctrl-C) to this process when half the output's bytes are in its temporary file."""
    from latentkit import io

    real = io.atomic_write

    def atomic_write(path, write, inputs=()):
        def half_then_interrupt(tmp: Path) -> None:
            write(tmp)
            tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
            # a shell's background job (`cmd &`, as a CI runner may start pytest) inherits SIGINT ignored, and
            # Python then keeps it ignored: install Python's own handler, as an interactive process has it
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                signal.raise_signal(signal.SIGINT)  # the handler raises KeyboardInterrupt here
            finally:
                signal.signal(signal.SIGINT, previous)

        return real(path, half_then_interrupt, inputs)

    monkeypatch.setattr(io, "atomic_write", atomic_write)


@dataclass(frozen=True)
class Case:
    name: str  #: the README's first column
    make: Callable  #: make(folder, ctx): writes the input into the row's folder
    command: str  #: after `latentkit`, as the README shows it (run from the row's folder; the test adds --model)
    status: int  #: the exit status
    expect: str  #: a fragment of the one-line error (``{other_id}``: the other model's id), or what is asserted
    check: Callable | None = None  #: check(folder, ctx, stdout) for an accepted input
    patch: Callable | None = None  #: patch(monkeypatch) before the command, e.g. to interrupt it
    skip: str | None = None  #: the reason this row cannot run here, when it cannot
    max_rss_mb: int | None = None  #: the most the process's peak memory may grow
    separate: str | None = None  #: the test that runs this row when it does not fit the table's test


ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
ENC = "encode a.png -o out/a.latent"
DEC = "decode a.latent -o out/a.png"

CASES = [
    Case("non-image file", write("a.png", b"hello, not a picture\n"), ENC, 2, "cannot read image a.png"),
    Case("empty file", write("a.png", b""), ENC, 2, "cannot read image a.png"),
    Case("folder as input (no images in it)", folder("photos"), "encode photos -o out/a.latent", 2,
         "no images"),
    Case("missing file", nothing, "encode nope.png -o out/a.latent", 2, "nope.png does not exist"),
    Case("1x1 image", rgb_png(1, 1), ENC, 0, "decodes to 1x1", size_back(1, 1)),
    Case("7x5 image", rgb_png(5, 7), ENC, 0, "decodes to 7x5", size_back(7, 5)),
    Case("16-bit grayscale PNG", png16, ENC, 0, "decodes to a 16-bit PNG", sixteen_bit_back),
    Case("16-bit colour PNG", png16_colour, ENC, 0, "decodes to an 8-bit RGB PNG", eight_bit_rgb_back),
    Case("palette PNG with transparency", palette_with_transparency, ENC, 0, "RGBA, alpha bit-exact", alpha_kept),
    Case("CMYK JPEG", cmyk_jpeg, "encode a.jpg -o out/a.latent", 0, "decodes to RGB", rgb_back),
    Case("EXIF-rotated JPEG (orientation 6)", exif_rotated_jpeg, "encode a.jpg -o out/a.latent", 0,
         "decodes upright, 4x8", size_back(4, 8)),
    Case("PNG header claiming 30000x30000", png_claiming(30000, 30000), ENC, 2,
         "30000x30000 = 900000000 pixels, more than the limit", max_rss_mb=50),
    Case("output is the input", rgb_png(5, 7), "roundtrip a.png -o a.png --overwrite", 2,
         "refusing to overwrite the input file"),
    Case("output exists", both(rgb_png(5, 7), write("out/a.latent", b"old")), ENC, 2,
         "already exists; pass --overwrite"),
    Case("output in a missing folder", rgb_png(5, 7), "encode a.png -o nope/a.latent", 2,
         "output folder nope does not exist"),
    Case("output under a file", rgb_png(5, 7), "encode a.png -o a.png/a.latent", 2,
         "output folder a.png is a file"),
    Case("output in a read-only folder", both(rgb_png(5, 7), folder("ro", 0o555)), "encode a.png -o ro/a.latent", 2,
         "output folder ro is not writable", skip="root writes into read-only folders" if ROOT_USER else None),
    Case("output in a folder no one may write (/sys)", rgb_png(5, 7), "encode a.png -o /sys/a.latent", 2,
         "output folder /sys", skip=None if Path("/sys/kernel").is_dir() else "no Linux /sys here"),
    Case("--quality 0", rgb_png(5, 7), ENC + " --quality 0", 2, "quality must be an integer from 1 to 100"),
    Case("--quality 101", rgb_png(5, 7), ENC + " --quality 101", 2, "quality must be an integer from 1 to 100"),
    Case("--quality -5", rgb_png(5, 7), ENC + " --quality -5", 2, "quality must be an integer from 1 to 100"),
    Case("--quality abc", rgb_png(5, 7), ENC + " --quality abc", 2, "argument --quality: invalid int value: 'abc'"),
    Case("--bpp 0", rgb_png(5, 7), ENC + " --bpp 0", 2, "the target bpp must be a positive number"),
    Case("--bpp -1", rgb_png(5, 7), ENC + " --bpp -1", 2, "the target bpp must be a positive number"),
    Case("--bpp 1e9", rgb_png(5, 7), ENC + " --bpp 1e9", 0, "quality 100 (the best there is)", quality_100),
    Case("--bpp nan", rgb_png(5, 7), ENC + " --bpp nan", 2, "the target bpp must be a positive number"),
    Case("--max-pixels smaller than the image", rgb_png(5, 7), ENC + " --max-pixels 34", 2,
         "7x5 = 35 pixels, more than the limit of 34"),
    Case("empty .latent", write("a.latent", b""), DEC, 2, "empty .latent file"),
    Case(".latent made with another model", latent(other_model=True), DEC, 2,
         "made with model id {other_id}"),
    Case("truncated .latent", latent(lambda b: b[: len(b) // 2]), DEC, 2, "checksum mismatch"),
    Case(".latent with a flipped payload byte", latent(flip_payload_byte), DEC, 2, "checksum mismatch"),
    Case("Ctrl-C (SIGINT) while the output is written", rgb_png(5, 7), ENC, 130, "latentkit: interrupted",
         patch=sigint_while_writing),
    Case("two processes writing one output at once", nothing,
         "encode a.png -o out/same.latent --overwrite", 0,
         "one whole file, never a mix", separate="test_two_writers_same_output"),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, micro_vae):
    other = M.make_vae(dict(micro_vae.config), seed=1).eval().requires_grad_(False)
    return SimpleNamespace(model_dir=M.save_vae(micro_vae, tmp_path_factory.mktemp("models") / "micro"),
                           latent=latent_bytes(micro_vae), other_latent=latent_bytes(other),
                           other_id=M.model_id(other).hex())


def snapshot(d: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below `d`, hidden ones included."""
    found: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(d):
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), d)] = None
        for name in files:
            p = os.path.join(top, name)
            found[os.path.relpath(p, d)] = Path(p).read_bytes()
    return found


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@pytest.mark.parametrize("case", [c for c in CASES if not c.separate], ids=lambda c: c.name)
def test_bad_input(case: Case, ctx, tmp_path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    case.make(tmp_path, ctx)
    before = snapshot(tmp_path)
    if case.patch:
        case.patch(monkeypatch)
    argv = shlex.split(case.command) + ["--model", str(ctx.model_dir)]
    rss = peak_rss_mb()
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    grown = peak_rss_mb() - rss
    out, err = capsys.readouterr()
    assert status == case.status, err
    assert "Traceback" not in err
    if case.max_rss_mb is not None:
        assert grown < case.max_rss_mb, f"peak memory grew by {grown:.0f} MB"
    after = snapshot(tmp_path)
    if case.status:
        lines = err.splitlines()
        assert len(lines) == 1 and case.expect.format(other_id=ctx.other_id) in lines[0], err
        assert lines[-1].startswith(("latentkit: ", "latentkit encode: error: ")), err
        assert after == before  # no output, no temporary file, the input unchanged
    else:
        assert {k: v for k, v in after.items() if k in before} == before  # the inputs unchanged
        assert all(not Path(k).name.startswith(".") for k in after), sorted(after)  # no temporary files
        case.check(tmp_path, ctx, out)


DRIVER = """
import sys, time
from pathlib import Path
from latentkit.cli import main

image, quality, own, same, model, me, other, times = sys.argv[1:]
args = ["--model", model, "--quality", quality]
assert main(["encode", image, "-o", own] + args) == 0  # alone: the bytes this process writes
Path(me).touch()
t0 = time.monotonic()
while not Path(other).exists() and time.monotonic() - t0 < 300:  # both ready: start writing at the same time
    time.sleep(0.005)
for _ in range(int(times)):
    assert main(["encode", image, "-o", same, "--overwrite"] + args) == 0
"""


def test_two_writers_same_output(ctx, tmp_path):
    """Two real processes encode different images to the same OUT with --overwrite, 10 times each at the same
    time, while this process reads OUT: every read, and the file left, is the whole file one of them makes."""
    case = next(c for c in CASES if c.separate == "test_two_writers_same_output")
    out = tmp_path / "out"
    out.mkdir()
    for name, seed in (("a.png", 1), ("b.png", 2)):
        a = np.random.default_rng(seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)
        PILImage.fromarray(a).save(tmp_path / name)
    same = out / "same.latent"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, f"{x}.png", q, f"out/{x}.latent", str(same),
                               str(ctx.model_dir), f"{x}.ready", f"{y}.ready", "10"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for x, y, q in (("a", "b", "30"), ("b", "a", "90"))]
    seen: list[bytes] = []
    deadline = time.monotonic() + 600  # the machine may be heavily shared
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if same.exists():
            seen.append(same.read_bytes())
        time.sleep(0.002)
    results = [p.communicate(timeout=max(1, deadline - time.monotonic())) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == case.status and "Traceback" not in stderr, stderr
    whole = {(out / "a.latent").read_bytes(), (out / "b.latent").read_bytes()}
    assert len(whole) == 2
    assert same.read_bytes() in whole and all(s in whole for s in seen), "a mix of two writers"
    assert sorted(p.name for p in out.iterdir()) == ["a.latent", "b.latent", "same.latent"]  # no temporary files
    assert main(["decode", str(same), "-o", str(tmp_path / "back.png"), "--model", str(ctx.model_dir)]) == 0
    assert PILImage.open(tmp_path / "back.png").size == (24, 16)


def readme_table() -> list[list[str]]:
    """The rows of the README table after the line that starts with "**Bad input.**", as cells."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**Bad input.**"))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    assert set(table[1]) <= set("|-: ")  # the header's separator row
    rows = [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in table]
    assert rows[0] == ["input", "command", "what you get"]
    return rows[2:]


def test_readme_table_is_cases():
    rows = readme_table()
    assert all(len(r) == 3 for r in rows), [r for r in rows if len(r) != 3]
    assert [r[0] for r in rows] == [c.name for c in CASES]
    assert [r[1] for r in rows] == [f"`latentkit {c.command}`" for c in CASES]
    for row, case in zip(rows, CASES):
        result = row[2]
        assert result.startswith(f"exit {case.status}"), row
        if "{" not in case.expect:
            assert case.expect in result, row
