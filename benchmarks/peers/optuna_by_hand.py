"""Optuna done well by hand: the project's cnn space, trained with a plain torchvision loop.

What a competent user writes with Optuna's documented API and torchvision, given the same search
space and model builder (``spaces.cnn.space`` gives a ``RunConfig``, ``search.models.build_model``
builds it; both shared on purpose) but none of the project's engine or trainer:

- the study: ``optuna.create_study(sampler=TPESampler(seed=S), pruner=MedianPruner())``
  (minimise; univariate TPE with 10 random start-up trials, the median pruner with 5 start-up
  trials and no warm-up steps: their default settings), run with
  ``study.optimize(objective, timeout=BUDGET, catch=(InvalidConfig,))``: a geometry that
  shrinks the feature map below 1x1 would fail that trial, as it does in the project's study
  (the cnn space has drawn none since its geometry rule; runs before it did draw them);
- the data: the project's stratified split (train part, or its ``--train-limit`` subset; the
  whole 10k val part), as ``TensorDataset``s of float images in [0, 1], read by a
  ``torch.utils.data.DataLoader`` (batch size from the config, ``shuffle=True``,
  ``num_workers=0``; validation 1,000 images at a time, in order);
- the recipe, all of it: input normalisation by the training images' mean and std; the
  config's optimizer (SGD, SGD with momentum 0.9, Nesterov, or AdamW; its weight decay);
  ``CosineAnnealingLR`` stepped every batch down to 0 at the last epoch when the config says
  cosine; ``CrossEntropyLoss(label_smoothing=...)``; augmentation with ``torchvision.transforms.v2``
  as the classic per-image pipeline: ``RandomCrop(28, padding=p)``, ``RandomHorizontalFlip()``,
  ``Normalize``, ``RandomErasing(p=...)`` (torchvision's defaults otherwise), applied to every
  image of a batch with its own random draw (v2 ops given a whole batch tensor draw one crop,
  one flip and one erased box for the batch, a weaker augmentation than the config asks for;
  per image, crop + flip + erasing cost 8.5 ms per batch of 128 on the 2-core machine);
- 15 epochs per trial (the project's default budget), every epoch validated on the whole 10k
  val split: the plain cross-entropy is reported (``trial.report(val_loss, epoch)``) and is
  the objective (minimised, as in the project), a NaN/inf loss or ``trial.should_prune()``
  prunes the trial, and the accuracy is appended to the benchmark's timeline;
- precision: ``--precision bf16`` trains and validates under ``torch.autocast(dtype=bfloat16)``
  with the model and batches in ``channels_last`` (as PyTorch's performance tuning guide advises
  for CNNs); ``fp32`` without either. The benchmark passes bf16 where the CPU computes bf16
  natively (on the 2-core AVX512-BF16 machine a VGG-style step of batch 128 took 43.6 ms in
  fp32, 38.0 ms with autocast alone and 16.1 ms with autocast and channels_last), else fp32.

    .venv/bin/python benchmarks/peers/optuna_by_hand.py --seed 0 --budget 600 \\
        --storage sqlite:///e.db --timeline e.jsonl [--train-limit N] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: spaces, search

from search.data import load_split  # noqa: E402
from search.errors import InvalidConfig  # noqa: E402
from search.models import build_model  # noqa: E402
from search.training import TrainConfig  # noqa: E402
from spaces import cnn  # noqa: E402

EPOCHS = 15  # per trial, as `fmnist-search run --epochs` defaults to
VAL_BATCH = 1000  # images per validation batch


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=t.lr,
        momentum=0.0 if t.optimizer == "sgd" else 0.9,
        nesterov=t.optimizer == "nesterov",
        weight_decay=t.weight_decay,
    )


def make_augment(t: TrainConfig, mean: float, std: float) -> tuple[v2.Transform, bool]:
    """The per-image pipeline (crop, flip, normalise, erase), and whether it is random."""
    ops: list[v2.Transform] = []
    if t.crop_pad:
        ops.append(v2.RandomCrop(28, padding=t.crop_pad))
    if t.flip:
        ops.append(v2.RandomHorizontalFlip())
    ops.append(v2.Normalize([mean], [std]))
    if t.erasing > 0:
        ops.append(v2.RandomErasing(p=t.erasing))
    return v2.Compose(ops), len(ops) > 1


class Objective:
    """Trains one sampled configuration; validation loss after every epoch, pruned on it."""

    def __init__(self, args: argparse.Namespace, t0: float) -> None:
        split = load_split(seed=args.seed, train_limit=args.train_limit)
        train_x = split.train_x.float().div(255).unsqueeze(1)  # [N, 1, 28, 28] in [0, 1]
        self.mean, self.std = float(train_x.mean()), float(train_x.std())
        self.train_set = TensorDataset(train_x, split.train_y)
        val_x = (split.val_x.float().div(255).unsqueeze(1) - self.mean) / self.std
        self.val_loader = DataLoader(TensorDataset(val_x, split.val_y), batch_size=VAL_BATCH)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bf16 = args.precision == "bf16"
        self.timeline, self.t0 = args.timeline, t0

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = cnn.space(trial)
        t = cfg.train
        model = build_model(cfg.model).to(self.device)  # InvalidConfig: the trial fails
        layout = torch.channels_last if self.bf16 else torch.contiguous_format
        model = model.to(memory_format=layout)
        loader = DataLoader(self.train_set, batch_size=t.batch_size, shuffle=True, num_workers=0)
        optimizer = make_optimizer(model, t)
        scheduler = None
        if t.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=EPOCHS * len(loader)
            )
        criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        augment, per_image = make_augment(t, self.mean, self.std)
        for epoch in range(1, EPOCHS + 1):
            model.train()
            for x, y in loader:
                x = torch.stack([augment(img) for img in x]) if per_image else augment(x)
                x = x.to(self.device, memory_format=layout)
                y = y.to(self.device)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                    loss = criterion(model(x).float(), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            val_loss, val_accuracy = self.validate(model, layout)
            self.record(val_accuracy, trial.number, epoch=epoch, val_loss=val_loss)
            if not math.isfinite(val_loss):  # diverged: nothing left to learn from it
                raise optuna.TrialPruned()
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return val_loss

    @torch.no_grad()
    def validate(self, model: nn.Module, layout: torch.memory_format) -> tuple[float, float]:
        model.eval()
        loss, correct, n = 0.0, 0, 0
        for x, y in self.val_loader:
            x, y = x.to(self.device, memory_format=layout), y.to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                logits = model(x).float()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return loss / n, correct / n

    def record(self, val_accuracy: float, trial: int, **extra: float) -> None:
        """One timeline line per validation, written at once (seconds since launch)."""
        line = {"seconds": time.time() - self.t0, "val_accuracy": val_accuracy, "trial": trial}
        with open(self.timeline, "a") as f:
            f.write(json.dumps(line | extra) + "\n")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="split, sampler and torch seed")
    ap.add_argument("--budget", type=float, default=600, help="the study's timeout (seconds)")
    ap.add_argument("--storage", default="sqlite:///by_hand.db")
    ap.add_argument("--timeline", type=Path, default=Path("by_hand.jsonl"))
    ap.add_argument("--t0", type=float, default=None, help="launch time (time.time())")
    ap.add_argument("--train-limit", type=int, default=None, help="stratified training subset")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    t0 = time.time() if args.t0 is None else args.t0
    signal.signal(signal.SIGTERM, _stop)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = Objective(args, t0)
    study = optuna.create_study(
        storage=args.storage,
        study_name="by_hand",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    try:
        study.optimize(objective, timeout=args.budget, catch=(InvalidConfig,))
    except KeyboardInterrupt:
        sys.exit(130)
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if done:
        print(f"best trial {study.best_trial.number}: val loss {study.best_value:.4f}")


if __name__ == "__main__":
    main()
