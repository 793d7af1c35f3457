"""``bknumba export`` (bknumba.nn.export.main) on real PyTorch checkpoint files."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bknumba.nn as bnn  # noqa: E402
from bknumba.nn.export import main  # noqa: E402

from . import nn_torch_reference as ref  # noqa: E402

pytestmark = pytest.mark.torch

CFG = {"d_model": 8, "n_seq": 16, "target_sparsity": 0.5}


def _layer():
    return ref.randomize_(ref.SparseMoEResNetBKLayer(8, 16, num_experts=2), 1).eval()


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_export_plain_state_dict(tmp_path, fmt, capsys):
    m = _layer()
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    out = tmp_path / f"o.{fmt}"
    cfg = dict(CFG, num_experts=2)
    assert main([str(tmp_path / "sd.pt"), str(out), "--module", "SparseMoEResNetBKLayer",
                 "--config", json.dumps(cfg), "--source-note", "commit 6182361"]) == 0
    mod = bnn.load(out)
    assert mod.metadata["source"]["note"] == "commit 6182361"
    assert mod.metadata["source"]["torch_version"] == torch.__version__
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        exp = m(x).numpy()
    np.testing.assert_allclose(mod(x.numpy()), exp, rtol=1e-5, atol=1e-5 * np.abs(exp).max())


def test_export_checkpoint_dict_ddp_and_prefix(tmp_path):
    m = _layer()
    sd = {f"module.{k}": v for k, v in m.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": sd, "optimizer": {"lr": 1.0}}, tmp_path / "c.pt")
    out = tmp_path / "core.npz"
    assert main([str(tmp_path / "c.pt"), str(out), "--module", "SparseBKCore",
                 "--prefix", "sparse_bk_core", "--config", json.dumps(CFG)]) == 0
    core = bnn.load(out)
    np.testing.assert_array_equal(core.p("interpolator.0.weight"),
                                  m.sparse_bk_core.interpolator[0].weight.detach().numpy())


def test_export_errors(tmp_path, capsys):
    m = _layer()
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    torch.save({"foo": 1}, tmp_path / "nothing.pt")
    base = [str(tmp_path / "sd.pt"), str(tmp_path / "o.npz"), "--module", "SparseMoEResNetBKLayer"]
    assert main(base + ["--config", "{bad json"]) == 2
    assert main(base + ["--config", "[1, 2]"]) == 2
    # wrong config -> shape problems, all listed
    assert main(base + ["--config", json.dumps(dict(CFG, n_seq=32, num_experts=2))]) == 1
    err = capsys.readouterr().err
    assert "StateDictError" in err and "h0_diag_base" in err
    assert main([str(tmp_path / "nothing.pt"), str(tmp_path / "o.npz"), "--module", "SparseBKCore",
                 "--config", json.dumps(CFG)]) == 1
    assert "no state dict found" in capsys.readouterr().err
    assert main(base[:3] + ["Nope", "--config", "{}"]) == 1
    assert "unknown module kind" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
