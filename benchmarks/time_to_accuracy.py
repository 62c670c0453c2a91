"""Time to accuracy: best validation accuracy against wall time, three ways, same budget.

    .venv/bin/python benchmarks/time_to_accuracy.py [--minutes 8] [--train-limit N]

Arms, each a fresh study in its own process on the same split, stopped (SIGTERM) when its wall
time budget is spent:

- ``fmnist-search``: ``fmnist-search run --space cnn`` with its defaults (TPE, Hyperband over
  epochs, warm start, the tensor-resident trainer with bf16/channels_last where native);
- ``random-no-pruner``: the same trainer and space, ``--sampler random --pruner none
  --no-warm-start``: every trial trains its full epoch budget;
- ``optuna-example``: TPE with the median pruner, as in Optuna's PyTorch example, training
  with a torchvision ``FashionMNIST`` + ``ToTensor`` + ``DataLoader`` loop in float32 on the same
  space (its augmentation and label smoothing unused, as the example has none).

The curve counts every validation score any trial reached at the end of an epoch, at the time it
was reached, measured from the arm's process start (data loading included). Prints a table, and
writes benchmarks/results/time_to_accuracy.csv and .png.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import RESULTS, torchvision_root, write_csv  # puts the repository on sys.path

CLI = [sys.executable, "-c", "from search.cli import entry; entry()"]
ARMS = ("fmnist-search", "random-no-pruner", "optuna-example")
EPOCHS = 15  # the run command's default epoch budget, for every arm


def arm_command(arm: str, storage: str, args: argparse.Namespace) -> list[str]:
    limit = ["--train-limit", str(args.train_limit)] if args.train_limit else []
    common = ["--trials", "100000", "--storage", storage, "--study", "bench", *limit]
    if arm == "fmnist-search":
        return [*CLI, "run", "--space", "cnn", *common]
    if arm == "random-no-pruner":
        return [*CLI, "run", "--space", "cnn", *common, "--sampler", "random", "--pruner", "none",
                "--no-warm-start"]  # fmt: skip
    return [sys.executable, __file__, "--example-worker", storage, *limit]


def example_worker(storage: str, train_limit: int | None) -> None:
    """The Optuna-example-style study: TPE + MedianPruner, DataLoader training in float32."""
    import optuna
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from search.data import load_split
    from search.models import build_model
    from search.training import make_optimizer
    from spaces import cnn

    split = load_split(seed=42, train_limit=train_limit)
    root = torchvision_root(Path(tempfile.mkdtemp()))
    ds = datasets.FashionMNIST(root, train=True, transform=transforms.ToTensor())
    train_ds = Subset(ds, split.train_idx.tolist())
    val_loader = DataLoader(Subset(ds, split.val_idx.tolist()), batch_size=1000)

    def objective(trial: optuna.Trial) -> float:
        cfg = cnn.space(trial)
        model = build_model(cfg.model)
        t = cfg.train
        opt = make_optimizer(model, t)  # the same optimizers as the trainer's
        loader = DataLoader(train_ds, batch_size=t.batch_size, shuffle=True)
        history, start = [], time.perf_counter()
        for epoch in range(1, EPOCHS + 1):
            model.train()
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
            model.eval()
            loss, correct = 0.0, 0
            with torch.no_grad():
                for x, y in val_loader:
                    out = model(x)
                    loss += float(F.cross_entropy(out, y, reduction="sum"))
                    correct += int((out.argmax(1) == y).sum())
            n = len(split.val_idx)
            history.append(
                {
                    "epoch": epoch,
                    "val_loss": loss / n,
                    "val_accuracy": correct / n,
                    "seconds": time.perf_counter() - start,
                }
            )
            trial.set_user_attr("history", history)
            if not history[-1]["val_loss"] < float("inf"):
                raise optuna.TrialPruned("diverged")
            trial.report(loss / n, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss / n

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    study = optuna.create_study(
        study_name="bench",
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=42),
        pruner=optuna.pruners.MedianPruner(),
    )
    try:
        study.optimize(objective, catch=(Exception,))
    except KeyboardInterrupt:
        pass


def run_arm(arm: str, args: argparse.Namespace, tmp: Path) -> tuple[list[tuple], dict]:
    import optuna

    db = tmp / f"{ARMS.index(arm)}.db"
    storage = f"sqlite:///{db}"
    log = open(tmp / f"{ARMS.index(arm)}.log", "w")
    began = datetime.now()
    proc = subprocess.Popen(arm_command(arm, storage, args), stdout=log, stderr=subprocess.STDOUT)
    budget = args.minutes * 60
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=storage)
    points = []  # (seconds since start, val accuracy, trial, epoch)
    for t in study.trials:
        if t.datetime_start is None:
            continue
        offset = (t.datetime_start - began).total_seconds()
        for h in t.user_attrs.get("history", []):
            at = offset + h["seconds"]
            if at <= budget:
                points.append((at, h["val_accuracy"], t.number, h["epoch"]))
    points.sort()
    states = [t.state.name for t in study.trials]
    info = {
        "trials_started": len(states),
        "finished": sum(s in ("COMPLETE", "PRUNED") for s in states),
        "complete": states.count("COMPLETE"),
    }
    return points, info


def best_by(points: list[tuple], seconds: float) -> float:
    return max((p[1] for p in points if p[0] <= seconds), default=float("nan"))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--example-worker":
        limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
        example_worker(sys.argv[2], limit)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8, help="wall-time budget per arm")
    ap.add_argument("--train-limit", type=int, default=None, help="stratified training subset")
    ap.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma-separated subset of the arms; the others keep their last run's points",
    )
    ap.add_argument(
        "--replot", action="store_true", help="redo table and plot from the last run's points"
    )
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",")]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    budget = args.minutes * 60
    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / "time_to_accuracy_points.json"
    if args.replot:
        curves = {arm: (list(map(tuple, c["points"])), c["info"]) for arm, c in
                  json.loads(saved.read_text()).items()}  # fmt: skip
    else:
        curves = {}
        if set(arms) != set(ARMS) and saved.exists():
            kept = json.loads(saved.read_text())
            curves = {a: (list(map(tuple, c["points"])), c["info"]) for a, c in kept.items()
                      if a in ARMS and a not in arms}  # fmt: skip
            print(f"kept from the last run: {', '.join(curves) or 'nothing'}")
        with tempfile.TemporaryDirectory() as tmp:
            for arm in arms:
                print(f"running {arm!r} for {args.minutes:g} min ...", flush=True)
                curves[arm] = run_arm(arm, args, Path(tmp))
                print(f"  {curves[arm][1]}", flush=True)
                # Every arm's raw points, kept as soon as it ends (--replot reads them).
                saved.write_text(
                    json.dumps({a: {"points": p, "info": i} for a, (p, i) in curves.items()})
                )
    marks = [budget / 4, budget / 2, budget]
    header = f"{'arm':22s} {'started':>7s} {'finished':>8s}" + "".join(
        f"  best@{m / 60:.1f}min" for m in marks
    )
    print(header)
    rows = []
    for arm, (points, info) in curves.items():
        bests = [best_by(points, m) for m in marks]
        print(
            f"{arm:22s} {info['trials_started']:>7d} {info['finished']:>8d}"
            + "".join(f"  {b:>12.4f}" for b in bests)
        )
        best = 0.0
        for at, acc, trial, epoch in points:
            if acc > best:
                best = acc
                rows.append(
                    {
                        "arm": arm,
                        "seconds": round(at, 1),
                        "best_val_accuracy": acc,
                        "trial": trial,
                        "epoch": epoch,
                    }  # fmt: skip
                )
    from search.training import cpu_name

    machine = cpu_name()
    write_csv(rows, RESULTS / "time_to_accuracy.csv")
    plot(curves, budget, machine, args)
    print(f"wrote {RESULTS / 'time_to_accuracy.png'}")


def plot(curves: dict, budget: float, machine: str, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for arm, (points, _info) in curves.items():
        xs, ys, best = [0.0], [float("nan")], float("nan")
        for at, acc, _t, _e in points:
            if not acc <= best:  # first point, or an improvement
                best = acc
                xs.append(at / 60)
                ys.append(best)
        xs.append(budget / 60)
        ys.append(best)
        ax.step(xs, ys, where="post", label=f"{arm} (best {best:.4f})", linewidth=2)
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("best validation accuracy so far")
    subset = f", {args.train_limit} training images" if args.train_limit else ""
    ax.set_title(f"Time to accuracy, cnn space ({machine}{subset})")
    ax.set_xlim(0, budget / 60)
    lows = [p[1] for pts, _ in curves.values() for p in pts]
    if lows:  # an arm stuck below 0.5 is drawn on the bottom edge; its label gives its value
        ax.set_ylim(max(0.5, min(lows) - 0.01), max(lows) + 0.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "time_to_accuracy.png")


if __name__ == "__main__":
    main()
