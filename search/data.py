"""The one place that finds, verifies and loads Fashion-MNIST.

Images are returned as uint8 tensors of shape [N, 28, 28], labels as int64 tensors of shape [N].
Files are looked for in this order: an explicit directory (``--data-dir`` / ``FMNIST_DATA_DIR``),
Debian's ``dataset-fashion-mnist`` package, torchvision's layout under ``./data``; if none has
them, torchvision downloads them into ``./data`` where the network allows.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search.errors import UsageError, UserError, first_line

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASSES)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_ROOT = Path("data")  # torchvision keeps its files in ROOT/FashionMNIST/raw
ENV_DATA_DIR = "FMNIST_DATA_DIR"

# SHA-256 of the *decompressed* IDX files, so the check holds whichever gzip produced the .gz
# (Debian recompresses them; torchvision keeps both the .gz and the raw file).
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
INSTALL_HINT = (
    "install them with `apt-get install dataset-fashion-mnist`, or point --data-dir / "
    f"{ENV_DATA_DIR} at a folder holding the four IDX files"
)


@dataclass(frozen=True)
class Split:
    """The stratified train/validation split of the 60k training images (uint8, [N, 28, 28])."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    train_idx: torch.Tensor  # positions in the 60k training file
    val_idx: torch.Tensor
    seed: int
    source: str


def _candidates(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    if os.environ.get(ENV_DATA_DIR):
        return [Path(os.environ[ENV_DATA_DIR])]
    return [DEBIAN_DIR, TORCHVISION_ROOT / "FashionMNIST" / "raw"]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def find_data_dir(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return the first folder holding all four files; download with torchvision if allowed."""
    stems = [s for pair in FILES.values() for s in pair]
    candidates = _candidates(data_dir)
    for directory in candidates:
        if all(_find(directory, s) for s in stems):
            return directory
    if data_dir is not None or os.environ.get(ENV_DATA_DIR):
        where = candidates[0]
        if not where.is_dir():
            raise UserError(f"data directory {where} does not exist: {INSTALL_HINT}")
        missing = [s for s in stems if not _find(where, s)]
        raise UserError(f"data directory {where} lacks {', '.join(missing)}: {INSTALL_HINT}")
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(TORCHVISION_ROOT), train=True, download=True)
            FashionMNIST(str(TORCHVISION_ROOT), train=False, download=True)
        except Exception as exc:  # no network, proxy refusal, ...
            reason = first_line(exc)
            raise UserError(
                f"Fashion-MNIST not found and the download failed ({reason}): {INSTALL_HINT}"
            ) from None
        return TORCHVISION_ROOT / "FashionMNIST" / "raw"
    raise UserError(f"Fashion-MNIST not found in {', '.join(map(str, candidates))}: {INSTALL_HINT}")


def _read_verified(path: Path, stem: str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(
            f"{path} is unreadable or truncated ({exc}); delete it and reinstall: {INSTALL_HINT}"
        ) from None
    if hashlib.sha256(raw).hexdigest() != SHA256[stem]:
        raise UserError(
            f"{path} fails its checksum (not the original Fashion-MNIST file); "
            f"replace it: {INSTALL_HINT}"
        )
    return raw


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    # IDX: 2 zero bytes, a type code (0x08 = uint8), the number of dims, then big-endian sizes.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} holds {body.size} bytes where its header promises {dims}")
    return body.reshape(dims)


def load_images_labels(
    part: str, data_dir: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``part`` ("train": 60k, "test": 10k) as (uint8 [N,28,28], int64 [N]) tensors."""
    directory = find_data_dir(data_dir, download=download)
    arrays = []
    for stem in FILES[part]:
        path = _find(directory, stem)
        assert path is not None
        arrays.append(_parse_idx(_read_verified(path, stem), path))
    images, labels = arrays
    if len(images) != len(labels):
        raise UserError(
            f"{directory} holds {len(images)} {part} images but {len(labels)} labels; "
            f"reinstall the files: {INSTALL_HINT}"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def verify_files(data_dir: str | Path | None = None) -> tuple[Path, dict[str, int]]:
    """Find (or download) the four files and check their checksums; returns (folder, counts)."""
    directory = find_data_dir(data_dir)
    counts = {}
    for stem in (s for pair in FILES.values() for s in pair):
        path = _find(directory, stem)
        assert path is not None
        raw = _read_verified(path, stem)
        counts[stem] = int.from_bytes(raw[4:8], "big")
    return directory, counts


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of a class-balanced subset of size ``n`` (scikit-learn's stratified sampler)."""
    from sklearn.model_selection import train_test_split

    if n >= len(labels):
        return torch.arange(len(labels))
    idx = np.arange(len(labels))
    keep, _ = train_test_split(idx, train_size=n, stratify=labels.numpy(), random_state=seed)
    return torch.from_numpy(np.sort(keep))


def check_train_limit(train_limit: int | None) -> None:
    """The one rule for ``--train-limit``: a stratified subset needs an image of every class."""
    if train_limit is not None and train_limit < NUM_CLASSES:
        raise UsageError(
            f"Invalid value for '--train-limit': {train_limit} is not in the range "
            f"x>={NUM_CLASSES} (a stratified subset needs an image of every class)."
        )


VAL_IMAGES = 10_000  # the seed's validation split
TRAIN_IMAGES = 60_000 - VAL_IMAGES


def train_images(train_limit: int | None) -> int:
    """How many images a split with ``train_limit`` trains on."""
    return min(train_limit, TRAIN_IMAGES) if train_limit else TRAIN_IMAGES


def load_split(
    data_dir: str | Path | None = None,
    seed: int = 42,
    val_size: int = VAL_IMAGES,
    train_limit: int | None = None,
) -> Split:
    """The seed's split: ``train_test_split(test_size=10000, stratify=y, random_state=seed)``.

    ``train_limit`` keeps a stratified subset of the training part only; validation stays whole
    so that scores are comparable between quick and full runs. The test set is not read here.
    """
    from sklearn.model_selection import train_test_split

    directory = find_data_dir(data_dir)
    images, labels = load_images_labels("train", directory)
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        idx, test_size=val_size, stratify=labels.numpy(), random_state=seed
    )
    train_idx = torch.from_numpy(train_idx)
    check_train_limit(train_limit)
    if train_limit is not None:
        train_idx = train_idx[stratified_subset(labels[train_idx], train_limit, seed)]
    val_idx = torch.from_numpy(val_idx)
    return Split(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        val_x=images[val_idx],
        val_y=labels[val_idx],
        train_idx=train_idx,
        val_idx=val_idx,
        seed=seed,
        source=str(directory),
    )


def load_test(data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10k test images. Only ``report``, ``evaluate`` and ``predict`` call this."""
    return load_images_labels("test", data_dir)
