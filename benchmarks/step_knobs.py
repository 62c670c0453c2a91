"""What bf16 autocast and channels_last each do to one training step, on synthetic batches.

    .venv/bin/python benchmarks/step_knobs.py [--threads 2]

For the seed's best CNN, a mid-size CNN, a large 3-block CNN and the seed's 5-layer MLP, at
batch 128 and 512: microseconds per image of a forward + backward + AdamW step in fp32, and the
speed-up of bf16 alone, channels_last alone and both. This is where ``--precision auto``'s rule
comes from. For CNNs with max pooling, ``pool_first_speedup`` compares the built model (max pool,
then the activation on the smaller map) with the same layers in the textbook order (activation,
then pool), both under bf16 + channels_last. Writes benchmarks/results/step_knobs.csv.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from _common import RESULTS, write_csv  # puts the repository on sys.path

from search.models import (
    CNNConfig,
    ConvBlock,
    build_cnn,
    build_model,
    count_parameters,
    get_preset,
)

MODELS = {
    "seed CNN": get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"),
    "mid CNN": CNNConfig(blocks=(ConvBlock(32), ConvBlock(64)), fc_hidden=(256,)),
    "large CNN": CNNConfig(
        blocks=(ConvBlock(64, 5), ConvBlock(64, 5), ConvBlock(64, 3)), fc_hidden=(256,)
    ),
    "seed MLP": get_preset("5L_512H_256H_128H_64H_32H_relu"),
}
KNOBS = {"bf16": (True, False), "channels_last": (False, True), "both": (True, True)}


def us_per_image(
    cfg, batch: int, bf16: bool, channels_last: bool, steps: int = 15, textbook: bool = False
) -> float:
    torch.manual_seed(0)
    model = build_cnn(cfg, pool_first=False) if textbook else build_model(cfg)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for step in range(steps + 3):  # 3 warm-up steps
        if step == 3:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps / batch * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, cfg in MODELS.items():
        for batch in (128, 512):
            base = us_per_image(cfg, batch, False, False)
            row = {"model": name, "params": count_parameters(build_model(cfg)), "batch": batch,
                   "fp32_us_per_image": round(base, 1)}  # fmt: skip
            for knob, (bf16, cl) in KNOBS.items():
                if cl and cfg.kind != "cnn":
                    continue
                row[f"{knob}_speedup"] = round(base / us_per_image(cfg, batch, bf16, cl), 2)
            if cfg.kind == "cnn" and cfg.pool == "max":
                ours = us_per_image(cfg, batch, True, True)
                row["pool_first_speedup"] = round(
                    us_per_image(cfg, batch, True, True, textbook=True) / ours, 2
                )
            rows.append(row)
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    columns = dict.fromkeys(k for r in rows for k in r)  # every column, in first-seen order
    write_csv([{**columns, **r} for r in rows], RESULTS / "step_knobs.csv")


if __name__ == "__main__":
    main()
