"""Training throughput: this project's trainer against the usual DataLoader loop, side by side.

    .venv/bin/python benchmarks/throughput.py [--train-limit 10000] [--repeats 2] [--device cpu]

For each model (the seed's best CNN ``Conv_2L_8_12_2L_128_32_AVG_BN``, a mid-size CNN of 825k
parameters, the seed's 5-layer MLP) and the same work (one epoch over a stratified subset of the
training split, batch 128, AdamW, then one pass over the 10k validation images), it times:

- ``dataloader``: the loop of the seed report and of Optuna's PyTorch example, a torchvision
  ``FashionMNIST`` dataset with ``ToTensor`` and a ``DataLoader`` (shuffle, batch 128), float32;
- ``ours-fp32``: ``search.training.train`` with ``--precision fp32`` (tensors resident on the
  device, batched augmentation-free slicing);
- ``ours-auto``: the same with the default precision (bf16 autocast and channels_last for CNNs
  where the hardware computes bf16 natively, else identical to fp32).

Each figure is the best of ``--repeats`` runs, in training images per second (train images of
the epoch divided by the wall time of epoch + validation pass). Prints a table with the ratio to
the DataLoader loop and writes benchmarks/results/throughput.csv.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, torchvision_root, write_csv  # noqa: E402 (puts the repo on sys.path)

from search.data import load_split  # noqa: E402
from search.models import CNNConfig, ConvBlock, build_model, count_parameters, get_preset  # noqa: E402
from search.training import DeviceData, RunConfig, TrainConfig, cpu_name, train  # noqa: E402

MODELS = {
    "seed CNN (Conv_2L_8_12_2L_128_32_AVG_BN)": get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"),
    "mid CNN (32-64 conv, 256 FC)": CNNConfig(
        blocks=(ConvBlock(32), ConvBlock(64)), fc_hidden=(256,)
    ),
    "seed MLP (5L_512H_256H_128H_64H_32H_relu)": get_preset("5L_512H_256H_128H_64H_32H_relu"),
}
BATCH = 128
LR = 1e-3


def dataloader_loop(cfg, root: Path, split, device: torch.device) -> float:
    """Seconds for one epoch + validation pass, the way the seed and Optuna's example train."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    ds = datasets.FashionMNIST(root, train=True, download=False, transform=transforms.ToTensor())
    train_loader = DataLoader(Subset(ds, split.train_idx.tolist()), batch_size=BATCH, shuffle=True)
    val_loader = DataLoader(Subset(ds, split.val_idx.tolist()), batch_size=1000)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    start = time.perf_counter()
    model.train()
    for x, y in train_loader:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val_loader:
            correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(cfg, split, device: torch.device, precision: str) -> tuple[float, str]:
    data = DeviceData(split, device, precision)
    run = RunConfig(cfg, TrainConfig(optimizer="adamw", lr=LR, batch_size=BATCH, epochs=1))
    start = time.perf_counter()
    result = train(run, data, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-limit", type=int, default=10_000, help="training images per epoch")
    ap.add_argument("--repeats", type=int, default=2, help="runs per figure; the best counts")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--out", default=str(RESULTS / "throughput.csv"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split = load_split(seed=42, train_limit=args.train_limit)
    n = len(split.train_y)
    machine = cpu_name()
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}; {machine}"
    print(
        f"training images per second, {n} train + {len(split.val_y)} val images per run, "
        f"batch {BATCH}, {args.threads} threads, {device}, torch {torch.__version__}, {machine}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        for name, cfg in MODELS.items():
            params = count_parameters(build_model(cfg))
            base = min(dataloader_loop(cfg, root, split, device) for _ in range(args.repeats))
            results = {"dataloader": (base, "fp32")}
            for label, precision in (("ours-fp32", "fp32"), ("ours-auto", "auto")):
                runs = [ours(cfg, split, device, precision) for _ in range(args.repeats)]
                results[label] = min(runs)
            for label, (seconds, precision) in results.items():
                row = {
                    "model": name,
                    "params": params,
                    "method": label,
                    "precision": precision,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(n / seconds, 1),
                    "speedup_vs_dataloader": round(base / seconds, 2),
                    "device": str(device),
                    "threads": args.threads,
                    "train_images": n,
                    "machine": machine,
                }
                rows.append(row)
                print(
                    f"{name:44s} {params:>9,}  {label:11s} {precision:5s} "
                    f"{row['images_per_s']:>9,.0f} img/s  x{row['speedup_vs_dataloader']:.2f}",
                    flush=True,
                )
    write_csv(rows, Path(args.out))


if __name__ == "__main__":
    main()
