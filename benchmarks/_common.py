"""What the benchmark scripts share: the torchvision layout of the data, earlier revisions of the
code to compare with, and their CSV output."""

from __future__ import annotations

import csv
import gzip
import shutil
import statistics
import subprocess
import sys
import tarfile
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


def export(rev: str, into: Path) -> Path:
    """``git archive REV`` unpacked into ``into``; returns the tree's root. A process started
    with ``PYTHONPATH`` set to it (:func:`on_tree`) runs that revision's search/ and spaces/."""
    tar = into / "tree.tar"
    with open(tar, "wb") as fh:
        subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=fh, check=True)
    root = into / "tree"
    with tarfile.open(tar) as tf:
        tf.extractall(root, filter="data")
    return root


def short_rev(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def tree_rev() -> str:
    """The working tree's revision: HEAD's short hash, "+changes" if tracked files differ."""
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return short_rev("HEAD") + ("+changes" if changed else "")


def on_tree(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` for a process that imports ``tree``'s search/ and spaces/, not the installed."""
    return {**env, "PYTHONPATH": str(tree)}


def mean_std(xs: list[float]) -> str:
    """ "mean ± sample std" to 4 places (std 0 for a single value)."""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")
