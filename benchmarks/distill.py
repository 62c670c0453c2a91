"""Does one network distilled from the report's ensemble come near the ensemble's accuracy?

    .venv/bin/python benchmarks/distill.py --report-dir reports/cnn [--trial N] [--seeds 3]
        [--weight 0.9] [--temperature 4] [--train-limit N] [--out DIR]

``report`` writes ``ensemble.pt``, its re-trained runs' class probabilities averaged, which in
the default study scores about 0.009 test accuracy above one network at 9 networks' cost per
image. This re-trains one of the report's trials (``--trial``; default its best sampled trial by
mean validation accuracy) from scratch as the report did (the same config and epochs, the same
seeds as the report's runs of it, the full stratified 50k/10k split), with the ensemble as a
teacher (``training.Teacher``): its outputs for the training images (each member with its own
test-time flips, computed once, without augmentation) as soft targets, weight ``--weight`` at
temperature ``--temperature``, the labels the rest. Each distilled run is scored as the report
scores (float32, with test-time flips where the trial trained with flips) and printed beside the
report's run of the same seed, which is the same training without the teacher.

Writes ``distill.csv`` (one row per seed) into ``--out`` after every run and prints mean +- std.
The teacher's validation accuracy (float32, as the report scores) is printed first: it must be
the report's, a check that its outputs line up with the split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import RESULTS, mean_std, tree_rev, write_csv  # noqa: E402 (puts the repo on sys.path)

from search import checkpoint  # noqa: E402
from search.data import load_split, load_test  # noqa: E402
from search.training import (  # noqa: E402
    DeviceData,
    RunConfig,
    Teacher,
    cpu_name,
    evaluate,
    for_inference,
    normalize,
    predict_logits,
    train,
    tta_for,
)


def pick_trial(models: list[dict], trial: int | None) -> dict:
    """The report's entry for ``trial``; by default the sampled (not warm-start) trial with the
    best mean validation accuracy."""
    if trial is not None:
        for m in models:
            if m["trial"] == trial:
                return m
        raise SystemExit(f"trial {trial} is not among the report's: {[m['trial'] for m in models]}")
    sampled = [m for m in models if not m.get("warm_start") and m["runs"]]
    if not sampled:
        raise SystemExit("the report re-trained no sampled trial; pass --trial")
    return max(sampled, key=lambda m: m["summary"]["val_accuracy"]["mean"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-dir", type=Path, default=Path("reports/cnn"))
    ap.add_argument("--trial", type=int, default=None, help="the student's trial (best sampled)")
    ap.add_argument("--seeds", type=int, default=3, help="the first N of the report's seeds")
    ap.add_argument("--weight", type=float, default=0.9, help="the soft targets' share (0.9)")
    ap.add_argument("--temperature", type=float, default=4.0, help="softening (4)")
    ap.add_argument("--train-limit", type=int, default=None, help="a stratified subset (all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "distill")
    args = ap.parse_args()

    results = json.loads((args.report_dir / "results.json").read_text())
    entry = pick_trial(results["models"], args.trial)
    config = RunConfig.from_dict(entry["config"])
    runs = entry["runs"][: args.seeds]
    teacher_ckpt = checkpoint.load(args.report_dir / "ensemble.pt")
    split_seed = results["study"]["seed"]

    device = torch.device("cpu")
    data = DeviceData(load_split(seed=split_seed, train_limit=args.train_limit), device)
    if abs(data.mean - teacher_ckpt.mean) > 1e-4 or abs(data.std - teacher_ckpt.std) > 1e-4:
        raise SystemExit("the teacher was trained on another split's normalisation")
    test_x, test_y = load_test()
    test_x = normalize(test_x, data.mean, data.std)
    precision = data.precision_for(config.model)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, code "
        f"{tree_rev()}; teacher {args.report_dir / 'ensemble.pt'} ({teacher_ckpt.members} "
        f"networks); student trial {entry['trial']}, {config.train.epochs} epochs, weight "
        f"{args.weight}, temperature {args.temperature}, {precision}",
        flush=True,
    )
    # In float32, as the report scored the ensemble: its validation accuracy here must be the
    # report's, which checks that the teacher's outputs line up with this split.
    began = time.perf_counter()
    soft = predict_logits(teacher_ckpt.model, data.train_x)
    teacher_val = evaluate(teacher_ckpt.model, data.val_x, data.val_y)
    print(
        f"teacher: outputs for {len(soft):,} training images in {time.perf_counter() - began:.0f}"
        f" s; train accuracy {float((soft.argmax(1) == data.train_y).float().mean()):.4f}, "
        f"val accuracy {teacher_val.accuracy:.4f} (float32)",
        flush=True,
    )
    teacher = Teacher(soft, weight=args.weight, temperature=args.temperature)
    tta = tta_for(config, "flip")

    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        began = time.perf_counter()
        result = train(config, data, run["seed"], teacher=teacher)
        seconds = time.perf_counter() - began
        model = for_inference(result.model, tta)
        val = evaluate(model, data.val_x, data.val_y)
        test = evaluate(model, test_x, test_y)
        rows.append(
            {
                "trial": entry["trial"],
                "seed": run["seed"],
                "epochs": config.train.epochs,
                "weight": args.weight,
                "temperature": args.temperature,
                "val_accuracy": round(val.accuracy, 4),
                "val_loss": round(val.loss, 4),
                "test_accuracy": round(test.accuracy, 4),
                "test_loss": round(test.loss, 4),
                "report_val_accuracy": round(run["val"]["accuracy"], 4),
                "report_test_accuracy": round(run["test"]["accuracy"], 4),
                "train_seconds": round(seconds, 1),
                "precision": result.precision,
            }
        )
        print(
            f"  seed {run['seed']}: distilled val {val.accuracy:.4f} test {test.accuracy:.4f}; "
            f"the report's run val {run['val']['accuracy']:.4f} test "
            f"{run['test']['accuracy']:.4f} ({seconds:.0f} s)",
            flush=True,
        )
        write_csv(rows, args.out / "distill.csv")

    def ms(key: str) -> str:
        return mean_std([float(r[key]) for r in rows])

    print(f"\ntrial {entry['trial']}, {len(rows)} seeds (mean +- std):")
    print(f"  distilled     val {ms('val_accuracy')}  test {ms('test_accuracy')}")
    print(f"  report's runs val {ms('report_val_accuracy')}  test {ms('report_test_accuracy')}")
    ens = [e for e in results.get("ensembles", []) if e.get("file") == "ensemble.pt"]
    if ens:
        print(
            f"  teacher (ensemble.pt, {teacher_ckpt.members} networks) val "
            f"{ens[0]['val']['accuracy']:.4f}  test {ens[0]['test']['accuracy']:.4f} (report)"
        )


if __name__ == "__main__":
    main()
