"""A non-editable install (`pip install .`) carries the shipped weights and finds them outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import ROOT


def test_every_subpackage_is_in_the_wheel_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "latentkit").rglob("__init__.py")}
    assert found | {"latentkit._weights"} == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(out)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("latentkit-*.whl")
    return whl


def test_wheel_holds_the_default_weights_and_lpips_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ["default/config.json", "default/diffusion_pytorch_model.safetensors", "codec/config.json",
              "codec/diffusion_pytorch_model.safetensors", "codec-v0.8/config.json",
              "codec-v0.8/diffusion_pytorch_model.safetensors", "lpips/lin_squeeze_v0.1.pth",
              "lpips/squeezenet1_1_features.safetensors", "lpips/LICENSE-lpips.txt"]:
        assert f"latentkit/_weights/{f}" in names


def test_installed_wheel_loads_the_shipped_weights_outside_the_repository(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import latentkit, torch; from latentkit.metrics.lpips import LPIPS; vae = latentkit.load_vae(); "
            "x = torch.rand(1, 3, 32, 32); print(latentkit.__file__); print(tuple(latentkit.decode(vae, "
            "latentkit.encode(vae, x)).shape)); print(float(LPIPS('squeeze')(x, x))); "
            "print(latentkit.load_vae('codec').config.latent_channels, "
            "latentkit.load_vae('codec-v0.8').config.latent_channels)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LATENTKIT_WEIGHTS")}
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(tmp_path / "cache"), TORCH_HOME=str(tmp_path / "th"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    file, shape, d, codec_channels = r.stdout.strip().splitlines()
    assert file.startswith(str(target))  # the installed copy, not the repository
    assert shape == "(1, 3, 32, 32)" and float(d) == 0.0 and codec_channels == "4 4"
