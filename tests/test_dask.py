"""Dask backend: lazy results equal the in-memory ones, on threads and on a local cluster."""
from __future__ import annotations

import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask is an optional extra (bknumba[dask])")
distributed = pytest.importorskip("distributed", reason="dask.distributed is an optional extra")

import bknumba  # noqa: E402
from bknumba._dask import RechunkWarning  # noqa: E402

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=40)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def problem(rng):
    # 23 rows in chunks of 5: the last chunk is short
    a = -2 + rng.uniform(-3, 3, size=(23, 64))
    b = rng.uniform(0.5, 1.5, size=(23, 63))
    c = rng.uniform(0.5, 1.5, size=(23, 63))
    z = 1j + rng.uniform(-0.5, 0.5, size=23)
    mask = rng.random((23, 64)) < 0.6
    return a, b, c, z, mask


def _chunked(problem, rows=5):
    a, b, c, z, mask = problem
    return (da.from_array(a, chunks=(rows, -1)), da.from_array(b, chunks=(rows, -1)),
            da.from_array(c, chunks=(rows, -1)), da.from_array(z, chunks=rows),
            da.from_array(mask, chunks=(rows, -1)))


@pytest.mark.parametrize("method", ["ratio", "theta_phi"])
def test_full_on_cluster_equals_in_memory(client, problem, method):
    a, b, c, z, _ = problem
    ad, bd, cd, zd, _ = _chunked(problem)
    lazy = bknumba.bk_core(ad, bd, cd, zd, method=method)
    assert isinstance(lazy, da.Array) and lazy.chunks == ((5, 5, 5, 5, 3), (64,))
    result = client.compute(lazy).result()
    np.testing.assert_array_equal(result, bknumba.bk_core(a, b, c, z, method=method))


@pytest.mark.parametrize("semantics", ["seed", "local", "exact"])
def test_sparse_on_cluster_masks_chunked_like_inputs(client, problem, semantics):
    a, b, c, z, mask = problem
    ad, bd, cd, zd, md = _chunked(problem)
    lazy = bknumba.sparse_bk_core(ad, bd, cd, md, zd, semantics=semantics)
    np.testing.assert_array_equal(client.compute(lazy).result(),
                                  bknumba.sparse_bk_core(a, b, c, mask, z, semantics=semantics))


def test_threaded_scheduler_and_broadcast_arguments(problem):
    a, _, _, _, mask = problem
    ad = da.from_array(a, chunks=(4, -1))
    g = bknumba.bk_core(ad, 1.0, [1.0] * 63, 0.5j).compute(scheduler="threads")
    np.testing.assert_array_equal(g, bknumba.bk_core(a, 1.0, 1.0, 0.5j))
    g = bknumba.sparse_bk_core(ad, 1.0, 1.0, mask[0]).compute(scheduler="threads")
    np.testing.assert_array_equal(g, bknumba.sparse_bk_core(a, 1.0, 1.0, mask[0]))


def test_rows_split_across_chunks_are_rechunked_with_warning(problem):
    a = problem[0]
    with pytest.warns(RechunkWarning, match="chunked along the sequence axis"):
        lazy = bknumba.bk_core(da.from_array(a, chunks=(6, 16)), 1.0, 1.0)
    assert lazy.chunks[1] == (64,)
    np.testing.assert_array_equal(lazy.compute(), bknumba.bk_core(a, 1.0, 1.0))


def test_shapes_are_checked_eagerly(problem):
    ad = da.from_array(problem[0], chunks=(5, -1))
    with pytest.raises(ValueError, match=r"b has shape \(23, 3\); expected \(23, 63\)"):
        bknumba.bk_core(ad, np.ones((23, 3)), 1.0)


def test_singular_rows_follow_on_singular(problem):
    a = problem[0].copy()
    a[7] = 0.0
    ad = da.from_array(a, chunks=(5, -1))
    lazy = bknumba.bk_core(ad, 0.0, 0.0, 0.0, on_singular="nan")
    g = lazy.compute(scheduler="threads")
    assert np.all(np.isnan(g[7])) and np.all(np.isfinite(np.delete(g, 7, axis=0)))
    with pytest.raises(bknumba.SingularResolventError):
        bknumba.bk_core(ad, 0.0, 0.0, 0.0).compute(scheduler="threads")


def _die_once(block, marker):
    """Kill this worker process the first time any block is computed."""
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)
    return block


def test_worker_killed_mid_computation_is_retried(client, problem, tmp_path):
    a, b, c, z, _ = problem
    marker = str(tmp_path / "killed")
    ad = da.from_array(a, chunks=(5, -1)).map_blocks(
        _die_once, marker, dtype=a.dtype, meta=np.empty((0, 0), a.dtype))
    lazy = bknumba.bk_core(ad, b, c, z)
    result = client.compute(lazy).result(timeout=120)
    assert os.path.exists(marker)  # a worker really died
    np.testing.assert_array_equal(result, bknumba.bk_core(a, b, c, z))
