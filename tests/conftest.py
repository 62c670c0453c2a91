from __future__ import annotations

import pytest
import torch

from search.data import load_split
from search.training import DeviceData


@pytest.fixture(scope="session")
def split():
    """The real split with a small stratified training subset (validation stays 10k)."""
    return load_split(train_limit=2000)


@pytest.fixture(scope="session")
def cpu_data(split):
    return DeviceData(split, torch.device("cpu"))


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path}/studies.db"
