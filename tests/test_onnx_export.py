"""ONNX export: the graphs run in ONNX Runtime (code nobody here wrote) and match PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentkit.cli import main
from latentkit.errors import LatentkitError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def run_graph(path, name: str, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [name]
    return session.run(None, {name: x.numpy()})[0]


def test_micro_model_graphs_match_pytorch_at_sizes_not_traced(tmp_path, micro_vae):
    from latentkit.model import decode, encode
    from latentkit.onnx_export import export_onnx

    result = export_onnx(micro_vae, tmp_path / "onnx")
    assert set(result["max_abs_diff"]) == {"encoder", "decoder"}
    x = torch.rand(3, 3, 40, 72, generator=torch.Generator().manual_seed(1))
    z_ref = encode(micro_vae, x, fast=False)
    z = run_graph(result["encoder"], "image", x)
    assert z.shape == (3, 4, 5, 9)
    np.testing.assert_allclose(z, z_ref.numpy(), atol=1e-3)
    y = run_graph(result["decoder"], "latent", z_ref)
    assert y.shape == (3, 3, 40, 72)
    np.testing.assert_allclose(y, decode(micro_vae, z_ref, fast=False).numpy(), atol=1e-3)


def test_default_weights_at_256(tmp_path, capsys):
    from latentkit.model import decode, encode, load_vae

    assert main(["export", str(tmp_path / "o"), "--format", "onnx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert max(report["max_abs_diff"].values()) < 1e-3
    vae = load_vae()
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    z_ref = encode(vae, x, fast=False)
    np.testing.assert_allclose(run_graph(report["encoder"], "image", x), z_ref.numpy(), atol=1e-3)
    np.testing.assert_allclose(run_graph(report["decoder"], "latent", z_ref), decode(vae, z_ref, fast=False).numpy(),
                               atol=1e-3)


def test_refuses_existing_files_and_flags_it_cannot_honour(tmp_path, micro_vae, capsys, monkeypatch):
    from latentkit.onnx_export import export_onnx

    out = tmp_path / "o"
    out.mkdir()
    (out / "decoder.onnx").write_bytes(b"mine")
    with pytest.raises(LatentkitError, match="already exist.*--overwrite"):
        export_onnx(micro_vae, out, verify=False)
    assert (out / "decoder.onnx").read_bytes() == b"mine"
    assert not (out / "encoder.onnx").exists()
    file = tmp_path / "f.onnx"
    file.write_bytes(b"x")
    with pytest.raises(LatentkitError, match="is a file"):
        export_onnx(micro_vae, file, verify=False)
    assert main(["export", str(tmp_path / "p"), "--format", "onnx", "--dtype", "fp16"]) == 2
    assert "float32" in capsys.readouterr().err


def test_a_graph_that_cannot_be_traced_is_one_line_and_leaves_no_file(tmp_path, micro_vae, monkeypatch):
    from latentkit import onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong\ntrace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(LatentkitError) as info:
        onnx_export.export_onnx(micro_vae, tmp_path / "o", verify=False)
    assert "\n" not in str(info.value) and "aten::frobnicate" in str(info.value)
    assert [p.name for p in (tmp_path / "o").iterdir()] == []  # the temp file went with the failure
