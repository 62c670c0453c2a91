"""What the benchmark scripts share: the torchvision layout of the data, and their CSV output."""

from __future__ import annotations

import csv
import gzip
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def torchvision_root(tmp: Path) -> Path:
    """torchvision's layout (ROOT/FashionMNIST/raw, decompressed) made from the verified files,
    for the DataLoader baselines (torchvision's own download is not needed)."""
    from search.data import SHA256, find_data_dir

    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = find_data_dir()
    for stem in SHA256:
        gz = src / f"{stem}.gz"
        with gzip.open(gz) if gz.exists() else open(src / stem, "rb") as f:
            with open(raw / stem, "wb") as out:
                shutil.copyfileobj(f, out)
    return tmp


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")
