"""The Examples sections of the public docstrings run as doctests."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "bknumba.core",
    "bknumba.reference",
    "bknumba.sparsity.losses",
    "bknumba.sparsity.scheduler",
    "bknumba.sparsity.stats",
    "bknumba.sparsity.flops",
    "bknumba.ffn.estimator",
    "bknumba.ffn.select",
    "bknumba.ffn.core",
    "bknumba.ffn.config",
    "bknumba.ffn.flops",
    "bknumba.ffn.io",
    "bknumba.ffn.metrics",
    "bknumba.nn.layers",
    "bknumba.nn.masks",
    "bknumba.nn.interp",
    "bknumba.nn.io",
    "bknumba.nn.modules",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
