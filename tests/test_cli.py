"""The roundtrip / info / init-model commands, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image as PILImage

from latentkit import model as M
from latentkit.cli import main


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory, micro_vae):
    return M.save_vae(micro_vae, tmp_path_factory.mktemp("models") / "micro")


@pytest.fixture
def small_png(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (13, 21, 4), dtype=np.uint8)
    f = tmp_path / "in.png"
    PILImage.fromarray(a).save(f)
    return f


def one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentkit: error:") and err.count("\n") == 1 and match in err, err
    assert "Traceback" not in err


def test_roundtrip(tmp_path, capsys, micro_dir, small_png):
    out = tmp_path / "out.png"
    assert main(["roundtrip", str(small_png), "-o", str(out), "--model", str(micro_dir)]) == 0
    assert "PSNR" in capsys.readouterr().out
    rec = PILImage.open(out)
    assert rec.mode == "RGBA" and rec.size == (21, 13)
    assert np.array_equal(np.asarray(rec)[..., 3], np.asarray(PILImage.open(small_png))[..., 3])

    assert main(["roundtrip", str(small_png), "-o", str(out), "--model", str(micro_dir), "--json", "--sample"]) == 2
    assert "--overwrite" in capsys.readouterr().err  # an existing output is kept unless asked
    assert main(["roundtrip", str(small_png), "-o", str(out), "--model", str(micro_dir), "--json", "--sample",
                 "--overwrite"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["width"] == 21 and figures["height"] == 13 and 0 < figures["psnr_db"] < 100


def test_init_model_and_info(tmp_path, capsys, micro_dir, micro_vae):
    out = tmp_path / "m"  # the micro architecture, copied from a model folder (named configs: test_model.py)
    assert main(["init-model", "--config", str(micro_dir), str(out), "--seed", "3", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["parameters"] == M.num_parameters(micro_vae)
    assert made["sha256"] != M.weights_sha256(micro_vae)  # new random weights, not a copy
    assert M.load_vae(out).config.block_out_channels == [8, 16, 16, 16]
    assert main(["info", "--model", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == made["sha256"] and info["parameters"] == made["parameters"]
    assert info["dtype"] == "float32" and info["stored_dtypes"] == ["F32"]
    assert info["scaling_factor"] == 1.0 and info["downsampling"] == 8
    assert main(["info", "--model", str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    one_line_error(capsys, ["init-model", "--config", "tiny", str(out)], "already exists")
    assert main(["init-model", "--config", str(micro_dir), str(out), "--seed", "4", "--overwrite"]) == 0
    assert M.weights_sha256(M.load_vae(out)) != made["sha256"]


@pytest.mark.parametrize("case", ["missing", "text_png", "model_path", "unknown_config", "out_is_in",
                                  "no_default"])
def test_errors(tmp_path, capsys, micro_dir, small_png, monkeypatch, case):
    out = str(tmp_path / "o.png")
    if case == "missing":
        one_line_error(capsys, ["roundtrip", str(tmp_path / "nope.png"), "-o", out, "--model", str(micro_dir)],
                       "does not exist")
    elif case == "text_png":
        (tmp_path / "t.png").write_text("hello")
        one_line_error(capsys, ["roundtrip", str(tmp_path / "t.png"), "-o", out, "--model", str(micro_dir)],
                       "cannot read image")
    elif case == "model_path":
        (tmp_path / "junk").mkdir()
        one_line_error(capsys, ["roundtrip", str(small_png), "-o", out, "--model", str(tmp_path / "junk")],
                       "not a diffusers model folder")
        one_line_error(capsys, ["info", "--model", str(tmp_path / "absent")], "does not exist")
    elif case == "unknown_config":
        one_line_error(capsys, ["init-model", "--config", "huge", str(tmp_path / "m")], "unknown config 'huge'")
    elif case == "out_is_in":
        before = small_png.read_bytes()
        one_line_error(capsys, ["roundtrip", str(small_png), "-o", str(small_png), "--model", str(micro_dir)],
                       "refusing to overwrite")
        assert small_png.read_bytes() == before
    else:
        monkeypatch.setitem(M.SHIPPED_MODELS, "default", tmp_path / "none")
        one_line_error(capsys, ["roundtrip", str(small_png), "-o", out], "init-model")


def test_subprocess_error_has_no_traceback(tmp_path):
    (tmp_path / "t.png").write_text("hello")
    r = subprocess.run([sys.executable, "-m", "latentkit.cli", "roundtrip", str(tmp_path / "t.png"), "-o",
                        str(tmp_path / "o.png"), "--model", str(tmp_path)], capture_output=True, text=True,
                       timeout=600)  # the machine may be heavily shared
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "cannot read image" in r.stderr


def test_help_everywhere(capsys):
    for cmd in ("roundtrip", "info", "init-model"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: latentkit " + cmd in capsys.readouterr().out


# -- the defects a new user met (issue: main's CI is red, and nine defects) -------------------------------------
class _Stdio:
    """A binary stdin/stdout stand-in (``.buffer`` and ``isatty``), for the ``-`` file name."""

    def __init__(self, data: bytes = b"", tty: bool = False):
        import io

        self.buffer, self._tty = io.BytesIO(data), tty

    def isatty(self) -> bool:
        return self._tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_dash_is_stdin_and_stdout(monkeypatch, capsys, micro_dir, small_png):
    monkeypatch.setattr(sys, "stdin", _Stdio(small_png.read_bytes()))
    monkeypatch.setattr(sys, "stdout", out := _Stdio())
    assert main(["encode", "-", "-o", "-", "--model", str(micro_dir), "--quality", "40"]) == 0
    latent = out.buffer.getvalue()
    assert latent[:2] == b"LK" and "bpp" in capsys.readouterr().err  # the report goes to stderr, not the data
    monkeypatch.setattr(sys, "stdin", _Stdio(latent))
    monkeypatch.setattr(sys, "stdout", out := _Stdio())
    assert main(["decode", "-", "-o", "-", "--model", str(micro_dir)]) == 0
    import io

    back = PILImage.open(io.BytesIO(out.buffer.getvalue()))
    assert back.format == "PNG" and back.size == (21, 13) and back.mode == "RGBA"


def test_binary_output_to_a_terminal_is_refused(monkeypatch, capsys, micro_dir, small_png):
    monkeypatch.setattr(sys, "stdout", _Stdio(tty=True))
    one_line_error(capsys, ["encode", str(small_png), "-o", "-", "--model", str(micro_dir)], "terminal")


def test_encode_input_and_output_mistakes(tmp_path, capsys, micro_dir, small_png):
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["encode", str(tmp_path / "empty"), "-o", str(tmp_path / "x"), "--model", str(micro_dir)],
                   "no images")
    one_line_error(capsys, ["encode", str(small_png), "-o", str(tmp_path / "x.png"), "--model", str(micro_dir)],
                   "names an image")
    assert not (tmp_path / "x.png").exists()
    for bpp in ("nan", "0", "-1", "inf"):
        one_line_error(capsys, ["encode", str(small_png), "-o", str(tmp_path / "x.latent"), "--bpp", bpp,
                                "--model", str(micro_dir)], "positive number")
    one_line_error(capsys, ["decode", str(tmp_path / "empty"), "-o", str(tmp_path / "y"), "--model", str(micro_dir)],
                   "no .latent files")


def test_decode_force_model(tmp_path, capsys, micro_dir, micro_vae, small_png):
    """A file decodes with another model only under --force-model, and --force-model needs --model."""
    from latentkit.model import make_vae, save_vae

    other = save_vae(make_vae(dict(micro_vae.config), seed=1), tmp_path / "other")
    data = tmp_path / "a.latent"
    assert main(["encode", str(small_png), "-o", str(data), "--model", str(micro_dir)]) == 0
    capsys.readouterr()
    back = tmp_path / "back.png"
    one_line_error(capsys, ["decode", str(data), "-o", str(back), "--force-model"], "--force-model needs --model")
    one_line_error(capsys, ["decode", str(data), "-o", str(back), "--model", str(other)], "--force-model")
    assert not back.exists()
    assert main(["decode", str(data), "-o", str(back), "--model", str(other), "--force-model"]) == 0
    assert back.is_file()


def test_max_pixels_zero_means_no_limit_everywhere(tmp_path, capsys, micro_dir, small_png):
    lat, out = tmp_path / "x.latent", tmp_path / "y.png"
    for argv in (["encode", str(small_png), "-o", str(lat)], ["decode", str(lat), "-o", str(out)],
                 ["roundtrip", str(small_png), "-o", str(out)]):
        assert main(argv + ["--model", str(micro_dir), "--max-pixels", "0", "--overwrite"]) == 0, capsys.readouterr().err
    one_line_error(capsys, ["encode", str(small_png), "-o", str(lat), "--model", str(micro_dir), "--max-pixels",
                            "100", "--overwrite"], "--max-pixels")


def test_info_prints_the_config(capsys, micro_dir):
    assert main(["info", "--model", str(micro_dir)]) == 0
    text = capsys.readouterr().out
    assert "config.json:" in text and "norm_num_groups" in text and "down_block_types" in text


def test_eval_model_needs_data(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval-model"])
    assert e.value.code == 2 and "--data" in capsys.readouterr().err


def test_closed_stdout_and_fp16_export_are_quiet(tmp_path, micro_dir):
    """`info --json | head -c 10`: a reader that goes away gives no traceback; `export --dtype fp16` prints no
    diffusers warning about float32 modules."""
    p = subprocess.Popen([sys.executable, "-m", "latentkit.cli", "info", "--model", str(micro_dir), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before anything is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 141 and err == ""
    r = subprocess.run([sys.executable, "-m", "latentkit.cli", "export", str(tmp_path / "e"), "--model",
                        str(micro_dir), "--dtype", "fp16"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stderr == "" and "wrote" in r.stdout


def test_the_console_entry_exits_early_with_everything_written(tmp_path, micro_dir, small_png):
    """`latentkit` (cli.console) skips the interpreter's teardown: stdout must still be complete, the output file
    whole and the status kept, on success and on error."""
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "latentkit.cli", *argv], capture_output=True, text=True,
                              timeout=600)

    r = run("encode", str(small_png), "-o", str(tmp_path / "a.latent"), "--model", str(micro_dir), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] == (tmp_path / "a.latent").stat().st_size
    r = run("decode", str(tmp_path / "a.latent"), "-o", str(tmp_path / "b.png"), "--model", str(micro_dir))
    assert r.returncode == 0 and (tmp_path / "b.png").read_bytes().endswith(b"IEND\xaeB`\x82")  # a whole PNG
    assert run("decode", str(tmp_path / "nope.latent"), "-o", str(tmp_path / "c.png")).returncode == 2


def test_cli_constants_agree_with_the_library():
    from latentkit.commands import _args
    from latentkit.io import DEFAULT_MAX_PIXELS
    from latentkit.metrics.lpips import NETS
    from latentkit.model import CONFIGS

    assert _args.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS and _args.LPIPS_NETS == NETS
    assert set(_args.CONFIG_NAMES) == set(CONFIGS)


@pytest.mark.parametrize("argv", [["--help"], ["encode", "--help"], ["train", "--help"], ["bench", "rd", "--help"],
                                  ["encode", "missing.png", "-o", "x.latent"], ["decode", "missing.latent", "-o",
                                                                                "x.png"],
                                  ["interpolate", "--help"], ["sample", "--help"], ["anomaly", "--help"],
                                  ["latent-stats", "--help"], ["interpolate", "missing.png", "m.png", "-o", "s.png"],
                                  ["sample", "-o", "g.png", "--size", "20"], ["encode-dataset", "--help"],
                                  ["encode-dataset", "missing", "-o", "x"], ["export", "--help"],
                                  ["bench", "report", "--help"], ["bench", "report", "missing", "-o", "r.html"]])
def test_help_and_input_errors_import_no_torch(argv, tmp_path):
    code = ("import sys\nfrom latentkit.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nheavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers'})\n"
            "print('RESULT', rc, ','.join(heavy) or 'none')")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
                       timeout=600)
    rc, heavy = r.stdout.strip().splitlines()[-1].split()[1:]
    assert heavy == "none" and rc == ("0" if "--help" in argv else "2"), r.stderr


def test_batch_folders_keep_names_report_failures_and_go_on(tmp_path, capsys, micro_dir):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        PILImage.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(src / name)
    (src / "broken.png").write_text("not an image")
    lat = tmp_path / "lat"
    assert main(["encode", str(src), "-o", str(lat), "--model", str(micro_dir), "--recursive", "--json",
                 "--jobs", "2"]) == 2  # one file failed, the others were written
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(p.relative_to(lat).as_posix() for p in lat.rglob("*.latent")) == ["a.latent", "b.latent",
                                                                                   "sub/c.latent"]
    assert sum("error" in r for r in rows) == 1 and "broken.png" in err and "3 of 4 files" in err
    back = tmp_path / "back"
    assert main(["decode", str(lat), "-o", str(back), "--model", str(micro_dir), "--recursive"]) == 0
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*.png")) == ["a.png", "b.png", "sub/c.png"]
    assert "3 of 3 files" in capsys.readouterr().out
    assert main(["decode", str(lat), "-o", str(back), "--model", str(micro_dir), "--recursive"]) == 2  # no clobber
    assert "already exists" in capsys.readouterr().err
    # resuming an interrupted batch: only the missing output is made, the others are skipped, not failed
    (back / "sub" / "c.png").unlink()
    before = (back / "a.png").stat().st_mtime_ns
    assert main(["decode", str(lat), "-o", str(back), "--model", str(micro_dir), "--recursive",
                 "--skip-existing"]) == 0
    summary = capsys.readouterr().out
    assert "1 of 3 files written" in summary and "2 skipped" in summary
    assert (back / "sub" / "c.png").exists() and (back / "a.png").stat().st_mtime_ns == before
    assert main(["roundtrip", str(src / "a.png"), str(src / "b.jpg"), "-o", str(tmp_path / "rt"), "--model",
                 str(micro_dir), "--format", "webp"]) == 0
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == ["a.webp", "b.webp"]
