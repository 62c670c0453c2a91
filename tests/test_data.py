from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from search import data
from search.errors import UserError

pytestmark = pytest.mark.needs_data


def test_train_and_test_files_load_as_uint8(split):
    x, y = data.load_images_labels("train")
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == set(range(10))


def test_split_is_stratified_and_disjoint():
    s = data.load_split()
    assert len(s.train_y) == 50000 and len(s.val_y) == 10000
    assert torch.bincount(s.train_y).tolist() == [5000] * 10
    assert torch.bincount(s.val_y).tolist() == [1000] * 10
    train, val = set(s.train_idx.tolist()), set(s.val_idx.tolist())
    assert not train & val
    assert train | val == set(range(60000))


def test_split_matches_sklearn_with_seed_42():
    # The seed report's split: train_test_split(test_size=10000, stratify=y, random_state=42).
    import numpy as np
    from sklearn.model_selection import train_test_split

    _, y = data.load_images_labels("train")
    _, val_idx = train_test_split(
        np.arange(60000), test_size=10000, stratify=y.numpy(), random_state=42
    )
    assert data.load_split().val_idx.tolist() == val_idx.tolist()


def test_train_limit_is_a_stratified_subset_of_the_training_part(split):
    assert len(split.train_y) == 2000
    assert torch.bincount(split.train_y).tolist() == [200] * 10
    full = data.load_split()
    assert set(split.train_idx.tolist()) <= set(full.train_idx.tolist())
    assert split.val_idx.tolist() == full.val_idx.tolist()


@pytest.fixture
def copied(tmp_path):
    """The four files, gzipped, in a folder of the test's own (wherever the real ones are)."""
    real = data.find_data_dir(download=False)
    for stems in data.FILES.values():
        for stem in stems:
            found = data._find(real, stem)
            if found.suffix == ".gz":
                shutil.copy(found, tmp_path / f"{stem}.gz")
            else:
                (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(found.read_bytes(), 1))
    return tmp_path


def test_explicit_directory_and_environment_are_used(copied, monkeypatch):
    assert data.find_data_dir(copied) == copied
    monkeypatch.setenv(data.ENV_DATA_DIR, str(copied))
    assert data.find_data_dir() == copied


def test_uncompressed_files_as_torchvision_keeps_them(copied):
    stem = "t10k-labels-idx1-ubyte"
    (copied / stem).write_bytes(gzip.decompress((copied / f"{stem}.gz").read_bytes()))
    (copied / f"{stem}.gz").unlink()
    _, y = data.load_images_labels("test", copied)
    assert len(y) == 10000


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        data.load_split(tmp_path / "nope")


def test_wrong_checksum_is_refused(copied):
    stem = "train-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((copied / f"{stem}.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (copied / f"{stem}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(UserError, match="fails its checksum"):
        data.load_images_labels("train", copied)


def test_truncated_gzip_is_refused(copied):
    path = copied / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        data.load_images_labels("test", copied)


def test_missing_file_is_named(copied):
    (copied / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="lacks t10k-labels-idx1-ubyte"):
        data.find_data_dir(copied)
