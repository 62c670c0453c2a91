"""Does a longer final training pay? The same configurations trained for 15 and 30 epochs.

    .venv/bin/python benchmarks/final_epochs.py [--epochs 15,30] [--seeds 3] [--models vgg,mlp]
        [--out benchmarks/results/final_epochs.csv]

``fmnist-search report --epochs E`` re-trains the best trials for E epochs instead of each trial's
own budget (15 by default). This trains, on the full stratified 50k/10k split with every core,
the cnn space's VGG-style warm start and the mlp space's seed MLP with the modern recipe (the
best warm starts of the two spaces) for each epoch budget and seed, seeds interleaved, and
scores each on the validation and the test split, the test split also with test-time flips (as
``report`` scores a model that trained with flips; column ``test_accuracy_flip``). The
learning-rate schedule (cosine to 0) stretches with the budget, as it does in a report. Prints
mean +- std over seeds and writes ``--out`` (benchmarks/results/final_epochs.csv).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, mean_std, write_csv  # noqa: E402 (puts the repo on sys.path)

from search.data import load_split, load_test  # noqa: E402
from search.training import (  # noqa: E402
    DeviceData,
    cpu_name,
    evaluate,
    for_inference,
    normalize,
    train,
    tta_for,
)
from spaces import cnn, mlp  # noqa: E402

MODELS = {
    "vgg": ("VGG-style CNN", cnn.WARM_START["VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment"]),
    "mlp": ("seed MLP, AdamW recipe", mlp.WARM_START["5L_512H_256H_128H_64H_32H_relu/adamw"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", default="15,30", help="epoch budgets to compare (15,30)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="vgg,mlp", help=f"of {', '.join(MODELS)}")
    ap.add_argument("--out", default=str(RESULTS / "final_epochs.csv"), help="the CSV to write")
    args = ap.parse_args()
    budgets = [int(e) for e in args.epochs.split(",")]
    names = [m.strip() for m in args.models.split(",")]

    device = torch.device("cpu")
    data = DeviceData(load_split(), device)
    test_x, test_y = load_test()
    test_x = normalize(test_x, data.mean, data.std)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for seed in range(args.seeds):
        for name in names:
            label, config = MODELS[name]
            for epochs in budgets:
                run = dataclasses.replace(
                    config, train=dataclasses.replace(config.train, epochs=epochs)
                )
                began = time.perf_counter()
                result = train(run, data, seed)
                seconds = time.perf_counter() - began
                test = evaluate(result.model, test_x, test_y)
                flipped = for_inference(result.model, tta_for(run, "flip"))
                test_flip = evaluate(flipped, test_x, test_y)
                rows.append(
                    {
                        "model": label,
                        "epochs": epochs,
                        "seed": seed,
                        "val_accuracy": round(result.val.accuracy, 4),
                        "val_loss": round(result.val.loss, 4),
                        "test_accuracy": round(test.accuracy, 4),
                        "test_loss": round(test.loss, 4),
                        "test_accuracy_flip": round(test_flip.accuracy, 4),
                        "seconds": round(seconds, 1),
                        "precision": result.precision,
                    }
                )
                print(
                    f"  {label:24s} {epochs:3d} epochs seed {seed}: val {result.val.accuracy:.4f}"
                    f" test {test.accuracy:.4f}, with flips {test_flip.accuracy:.4f}"
                    f" ({seconds:.0f} s)",
                    flush=True,
                )
                write_csv(rows, Path(args.out))  # after every run: a stopped run keeps its rows
    print(
        f"\n{'model':24s} {'epochs':>6s} {'val accuracy':>17s} {'test accuracy':>17s}"
        f" {'test, flips':>17s} {'time':>7s}"
    )
    for name in names:
        label = MODELS[name][0]
        for epochs in budgets:
            got = [r for r in rows if r["model"] == label and r["epochs"] == epochs]

            def ms(key: str, got=got) -> str:
                return mean_std([r[key] for r in got])

            minutes = statistics.mean(r["seconds"] for r in got) / 60
            print(
                f"{label:24s} {epochs:6d} {ms('val_accuracy'):>17s} {ms('test_accuracy'):>17s}"
                f" {ms('test_accuracy_flip'):>17s} {minutes:5.1f} m"
            )


if __name__ == "__main__":
    main()
