"""``bknumba verify`` (the README's main job): its sweep, table, JSON and exit status."""
from __future__ import annotations

import json

from bknumba import verify


def test_verify_passes_with_both_references(capsys, tmp_path):
    out = tmp_path / "verify.json"
    status = verify.main(["--sizes", "8", "33", "--rows", "2", "--scipy-max-n", "16",
                          "--json", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    assert "scipy" in text and "longdouble" in text and "0 failed" in text
    res = json.loads(out.read_text())
    # 2 sizes x 2 problems x (2 methods + 4 sparsities x 3 semantics)
    assert len(res) == 2 * 2 * (2 + 4 * 3)
    assert {r["case"] for r in res} == {"full/ratio", "full/theta_phi", "sparse/seed",
                                        "sparse/local", "sparse/exact"}
    assert all(r["ok"] and r["finite"] and r["error"] <= r["tolerance"] for r in res)
    # N = 8 against SciPy, N = 33 against the longdouble recursion (--scipy-max-n 16)
    assert {r["reference"] for r in res if r["n"] == 33} == {"longdouble"}
    assert "scipy" in {r["reference"] for r in res if r["n"] == 8}


def test_verify_exits_1_when_an_error_exceeds_its_tolerance(monkeypatch, capsys):
    monkeypatch.setitem(verify.TOLERANCES, "ratio", 1e-30)  # any rounding error fails
    assert verify.main(["--sizes", "40", "--rows", "1"]) == 1
    text = capsys.readouterr().out
    assert "NO" in text and "0 failed" not in text
