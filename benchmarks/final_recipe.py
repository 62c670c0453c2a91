"""Do weight averaging and flip test-time augmentation pay in a report's final training?

    .venv/bin/python benchmarks/final_recipe.py [--trials 98,2] [--seeds 3] [--epochs 30]
        [--study-dir benchmarks/results/default_study_d7b9eb3] [--ema 0.999] [--train-limit N]
        [--crop-pads 0,2] [--summarize]

Re-trains trials of a default cnn study (their parameters read from the study's committed
``trials.csv``) as ``report`` does (the full stratified 50k/10k split, each trial's recipe for
``--epochs`` epochs, cosine to 0 over them, every core) and scores each run four ways on the
validation and the test split, from the same training run:

- ``plain``: the final weights, as ``report --tta none`` scores them;
- ``flip``: the final weights, each image's class probabilities averaged with those of its
  mirror image (horizontal flip test-time augmentation, as ``report --tta flip`` scores models
  that trained with random flips; computed here on its own, as it was before the report had it);
- ``ema``: an exponential moving average of the weights and batch-norm statistics, updated
  after every optimizer step (``torch.optim.swa_utils.AveragedModel``, decay ``--ema``);
- ``ema+flip``: both.

``--crop-pads`` re-trains each trial once per listed random-crop padding instead of its own
(``0,2``: without random crops and with up to 2-pixel shifts), to see whether a recipe the
search chose at its shorter horizon would gain from augmentation at the report's.

Seeds are interleaved so that machine noise hits every trial alike. Prints mean +- std over
seeds and writes benchmarks/results/final_recipe.csv (after every run, so a run cut short keeps
what finished; ``--summarize`` prints the table of an ``--out`` file without training).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from _common import RESULTS, mean_std, write_csv  # noqa: E402 (puts the repo on sys.path)

import search.training as training  # noqa: E402
from search.data import load_split, load_test  # noqa: E402
from search.training import DeviceData, cpu_name, normalize, train  # noqa: E402
from spaces import cnn  # noqa: E402

WAYS = ("plain", "flip", "ema", "ema+flip")


@torch.no_grad()
def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, flip: bool) -> dict:
    """Accuracy and cross-entropy of ``model`` on (x, y) in float32, optionally averaging each
    image's probabilities with its mirror image's."""
    model.eval()
    probs = []
    for i in range(0, len(x), 2048):
        xb = x[i : i + 2048]
        p = F.softmax(model(xb).float(), dim=1)
        if flip:
            p = (p + F.softmax(model(xb.flip(-1)).float(), dim=1)) / 2
        probs.append(p)
    p = torch.cat(probs)
    return {
        "accuracy": float((p.argmax(1) == y).float().mean()),
        "loss": float(F.nll_loss(p.clamp_min(1e-12).log(), y)),
    }


def trial_configs(study_dir: Path, numbers: list[int]) -> dict[int, training.RunConfig]:
    with open(study_dir / "trials.csv", newline="") as f:
        params = {int(r["trial"]): json.loads(r["params"]) for r in csv.DictReader(f)}
    missing = [n for n in numbers if n not in params]
    if missing:
        raise SystemExit(f"trials {missing} are not in {study_dir / 'trials.csv'}")
    return {n: cnn.space(optuna.trial.FixedTrial(params[n])) for n in numbers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="98,2", help="trial numbers of the study (98,2)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay per step (0.999)")
    ap.add_argument(
        "--study-dir", type=Path, default=RESULTS / "default_study_d7b9eb3", help="has trials.csv"
    )
    ap.add_argument("--train-limit", type=int, default=None, help="a stratified subset (all)")
    ap.add_argument(
        "--crop-pads", default="", help="re-train each trial at these crop paddings (its own)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "final_recipe.csv")
    ap.add_argument(
        "--summarize", action="store_true", help="print the table of --out's runs; train nothing"
    )
    args = ap.parse_args()
    if args.summarize:
        with open(args.out, newline="") as f:
            table(list(csv.DictReader(f)))
        return
    numbers = [int(n) for n in args.trials.split(",")]
    configs = trial_configs(args.study_dir, numbers)
    pads = [int(p) for p in args.crop_pads.split(",") if p.strip()] or [None]
    arms = [(n, configs[n].train.crop_pad if p is None else p) for n in numbers for p in pads]

    # The EMA is updated after every optimizer step: wrap the one place that makes optimizers.
    averaged: list[torch.optim.swa_utils.AveragedModel] = []
    make_optimizer = training.make_optimizer

    def with_ema(model: torch.nn.Module, cfg: training.TrainConfig) -> torch.optim.Optimizer:
        opt = make_optimizer(model, cfg)
        ema = torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
            use_buffers=True,
        )
        averaged.append(ema)
        opt.register_step_post_hook(lambda *_: ema.update_parameters(model))
        return opt

    training.make_optimizer = with_ema

    device = torch.device("cpu")
    data = DeviceData(load_split(train_limit=args.train_limit), device)
    test_x, test_y = load_test()
    test_x = normalize(test_x, data.mean, data.std)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{args.epochs} epochs, EMA decay {args.ema}",
        flush=True,
    )
    rows = []
    for seed in range(args.seeds):
        for n, pad in arms:
            config = configs[n]
            run = dataclasses.replace(
                config,
                train=dataclasses.replace(config.train, epochs=args.epochs, crop_pad=pad),
            )
            averaged.clear()
            began = time.perf_counter()
            result = train(run, data, seed)
            seconds = time.perf_counter() - began
            final, ema = result.model, averaged[0].module
            for way in WAYS:
                model = ema if way.startswith("ema") else final
                flip = way.endswith("flip")
                val = score(model, data.val_x, data.val_y, flip)
                test = score(model, test_x, test_y, flip)
                rows.append(
                    {
                        "trial": n,
                        "crop_pad": pad,
                        "epochs": args.epochs,
                        "seed": seed,
                        "way": way,
                        "val_accuracy": round(val["accuracy"], 4),
                        "val_loss": round(val["loss"], 4),
                        "test_accuracy": round(test["accuracy"], 4),
                        "test_loss": round(test["loss"], 4),
                        "train_seconds": round(seconds, 1),
                        "precision": result.precision,
                        "ema_decay": args.ema,
                    }
                )
                print(
                    f"  trial {n:3d} crop {pad} seed {seed} {way:9s}: val {val['accuracy']:.4f}"
                    f" test {test['accuracy']:.4f} ({seconds:.0f} s)",
                    flush=True,
                )
            write_csv(rows, args.out)

    table(rows)
    write_csv(rows, args.out)


def table(rows: list[dict]) -> None:
    """Mean +- std over seeds of each (trial, crop padding, way) in ``rows``."""
    print(f"\n{'trial':>5s} {'crop':>4s} {'way':9s} {'val accuracy':>17s} {'test accuracy':>17s}")
    arms = dict.fromkeys((int(r["trial"]), int(r["crop_pad"])) for r in rows)
    for n, pad in arms:
        for way in WAYS:
            got = [
                r for r in rows if (int(r["trial"]), int(r["crop_pad"]), r["way"]) == (n, pad, way)
            ]
            seeds = len(got)

            def ms(key: str, got=got) -> str:
                return mean_std([float(r[key]) for r in got])

            print(
                f"{n:5d} {pad:4d} {way:9s} {ms('val_accuracy'):>17s} {ms('test_accuracy'):>17s}"
                f"  ({seeds} seed{'s' if seeds != 1 else ''})"
            )


if __name__ == "__main__":
    main()
