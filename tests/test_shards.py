"""Tests of crossent.data._shards: every rank's rows are the whole file's rows, sliced.

The reference is :func:`crossent.data.load_dataset` of the whole file: the ranks' shards,
in rank order, must give back exactly its ``X`` (same dtype, same bits) and ``y``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crossent.data import DataError, _shards, load_dataset
from crossent.data._shards import expand_sources, load_files, load_shard, row_block
from test_data import write_idx


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _check_shards(source, world, mapped=None, **options):
    """The shards against the whole load; with ``mapped`` (a monkeypatch), the shards must
    come from the memory-mapped readers: loading the whole file is made to fail."""
    whole = load_dataset(source, **options)
    if mapped is not None:

        def whole_load(*args, **kwargs):
            raise AssertionError("the whole file was loaded, not memory-mapped rows")

        mapped.setattr(_shards, "load_dataset", whole_load)
    shards = [load_shard(str(source), rank, world, **options) for rank in range(world)]
    starts = [s.start for s in shards]
    assert starts == [row_block(whole.n_samples, r, world)[0] for r in range(world)]
    assert all(s.n_total == whole.n_samples for s in shards)
    X = np.concatenate([s.data.X for s in shards])
    assert X.dtype == whole.X.dtype
    np.testing.assert_array_equal(X, whole.X)
    if whole.y is None:
        assert all(s.data.y is None for s in shards)
    else:
        y = np.concatenate([s.data.y for s in shards])
        assert y.dtype.kind == whole.y.dtype.kind
        np.testing.assert_array_equal(y, whole.y)
    assert all(s.data.image_shape == whole.image_shape for s in shards)
    assert all(s.data.feature_names == whole.feature_names for s in shards)
    return shards


def test_row_block_covers_every_row_once():
    for n in (3, 10, 11, 97):
        for world in (1, 2, 3):
            blocks = [row_block(n, r, world) for r in range(world)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
            sizes = [hi - lo for lo, hi in blocks]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_rows(tmp_path, rng, world, compressed, monkeypatch):
    path = tmp_path / "d.npz"
    save = np.savez_compressed if compressed else np.savez
    save(path, X=rng.normal(size=(11, 4)), y=rng.integers(0, 3, 11))
    _check_shards(path, world, mapped=None if compressed else monkeypatch)


def test_npz_images_float32_and_string_labels(tmp_path, rng):
    path = tmp_path / "img.npz"
    np.savez(path, X=rng.integers(0, 256, (7, 3, 2), dtype=np.uint8), y=np.array(list("abcabca")))
    _check_shards(path, 2)
    np.savez(path, X=rng.normal(size=(7, 3)).astype(np.float32), y=np.arange(7.0) % 2)
    _check_shards(path, 3)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_rows(tmp_path, rng, gz, monkeypatch):
    suffix = ".gz" if gz else ""
    images = rng.integers(0, 256, (9, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 3, 9, np.uint8), gz=gz)
    _check_shards(tmp_path / f"train-images-idx3-ubyte{suffix}", 2, None if gz else monkeypatch)


def test_csv_rows_with_quotes_blank_lines_and_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    rows = [f'{i}.5,"{-i}",{"ab"[i % 2]}' for i in range(10)]
    rows.insert(3, "")  # a blank line is not a row
    path.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    for world in (1, 2, 3, 4):
        _check_shards(path, world)
    quoted = tmp_path / "q.csv"  # a quoted line break inside a record
    quoted.write_text('x1,name,label\n1,"a\nb",0\n2,c,1\n3,d,0\n4,e,1\n')
    _check_shards(quoted, 2, label_column="label", feature_columns=["x1"])


def test_csv_fault_in_a_rank_rows_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,label\n1,0\n2,1\n3,0\nzz,1\n")
    load_shard(str(path), 0, 2)  # rows 0-1 are fine
    with pytest.raises(DataError, match=r"d\.csv: line 5: column 'x' has 'zz'"):
        load_shard(str(path), 1, 2)


def test_digits_and_too_few_rows(tmp_path):
    _check_shards("digits", 3)
    path = tmp_path / "d.csv"
    path.write_text("x,label\n1,0\n2,1\n")
    with pytest.raises(DataError, match=r"d\.csv: 2 rows for 3 ranks; every rank needs rows"):
        load_shard(str(path), 0, 3)


def test_glob_gives_each_rank_its_files(tmp_path, rng):
    for k in range(4):
        np.savez(tmp_path / f"part-{k}.npz", X=rng.normal(size=(k + 2, 3)), y=np.arange(k + 2) % 2)
    pattern = str(tmp_path / "part-*.npz")
    files = expand_sources(pattern)
    assert files == [str(tmp_path / f"part-{k}.npz") for k in range(4)]
    whole = [load_dataset(f) for f in files]
    for world in (2, 4):
        shards = [load_shard(pattern, r, world) for r in range(world)]
        assert all(s.start is None for s in shards)
        np.testing.assert_array_equal(
            np.concatenate([s.data.X for s in shards]), np.concatenate([w.X for w in whole])
        )
    together = load_files(pattern)  # what one process trains on
    np.testing.assert_array_equal(together.X, np.concatenate([w.X for w in whole]))
    np.testing.assert_array_equal(together.y, np.concatenate([w.y for w in whole]))
    assert together.name == pattern
    with pytest.raises(DataError, match=r"part-\*\.npz: 4 files for 5 ranks"):
        load_shard(pattern, 0, 5)
    with pytest.raises(DataError, match=r"nothing-\*\.csv: no file matches this pattern"):
        expand_sources(str(tmp_path / "nothing-*.csv"))


def test_misplaced_option_is_named_as_the_loader_names_it(tmp_path, rng):
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.normal(size=(4, 2)), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match=r"label_column= does not apply to an \.npz file"):
        load_shard(str(path), 0, 2, label_column="y")
