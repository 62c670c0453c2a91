"""Would a report's trial have scored better with one setting changed?

    .venv/bin/python benchmarks/recipe_variant.py --from DIR:TRIAL [--from DIR:TRIAL ...]
        --set NAME=VALUE [--set ...] [--seeds 3] [--jobs 2] [--out DIR]

Each ``--from`` names a report's folder (its ``results.json``; a report's output folder or a
copy under ``benchmarks/results/``) and one of its trials. That trial is re-trained from scratch
as the report did (its config and epochs, the report's seeds for it, the same stratified split,
scored in float32 with the report's test-time augmentation) with ``--set`` applied to its config: a
training-recipe field (``crop_pad=1``, ``erasing=0.05``, ``batch_size=128``) or a model field
(``fc_dropout=0.3``). Each run is paired with the report's run of the same seed, the same
training without the change. The runs go ``--jobs`` at a time, each with an equal share of the
cores, as the report runs them.

Writes ``recipe_variant.csv`` (one row per run) into ``--out`` once every run is done and
prints, per trial, mean +- std of both and the paired differences. Compare runs made on the
same kind of machine as the report's (its ``results.json`` does not name the CPU; the README
beside it does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, mean_std, tree_rev, write_csv  # noqa: E402 (puts the repo on sys.path)

from search.data import load_split, load_test  # noqa: E402
from search.parallel import map_in_processes, threads_per_worker  # noqa: E402
from search.training import (  # noqa: E402
    DeviceData,
    RunConfig,
    cpu_name,
    evaluate,
    for_inference,
    normalize,
    train,
    tta_for,
)


def changed(config: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``config`` with each setting replaced: a TrainConfig field, else a model field."""
    train_fields = {f.name for f in dataclasses.fields(config.train)}
    model_fields = {f.name for f in dataclasses.fields(config.model)}
    tr = {k: v for k, v in settings.items() if k in train_fields}
    mo = {k: v for k, v in settings.items() if k not in train_fields}
    unknown = set(mo) - model_fields
    if unknown:
        raise SystemExit(
            f"--set {', '.join(sorted(unknown))}: not a field of the recipe "
            f"({', '.join(sorted(train_fields))}) or of this model "
            f"({', '.join(sorted(model_fields))})"
        )
    return RunConfig(
        model=dataclasses.replace(config.model, **mo), train=dataclasses.replace(config.train, **tr)
    )


def parse_setting(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--set {text!r}: write NAME=VALUE, e.g. crop_pad=1")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a string, e.g. optimizer=nesterov


def _setup(split_seed: int, say: Any) -> tuple[DeviceData, torch.Tensor, torch.Tensor]:
    data = DeviceData(load_split(seed=split_seed), torch.device("cpu"))
    test_x, test_y = load_test()
    return data, normalize(test_x, data.mean, data.std), test_y


def _run(state: tuple[DeviceData, torch.Tensor, torch.Tensor], item: dict) -> dict:
    data, test_x, test_y = state
    config = RunConfig.from_dict(item["config"])
    began = time.perf_counter()
    result = train(config, data, item["seed"])
    seconds = time.perf_counter() - began
    model = for_inference(result.model, tta_for(config, item["tta"]))
    val = evaluate(model, data.val_x, data.val_y)
    test = evaluate(model, test_x, test_y)
    return {
        "val_accuracy": round(val.accuracy, 4),
        "val_loss": round(val.loss, 4),
        "test_accuracy": round(test.accuracy, 4),
        "test_loss": round(test.loss, 4),
        "train_seconds": round(seconds, 1),
        "precision": result.precision,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="sources", action="append", required=True,
                    metavar="DIR:TRIAL", help="a report folder and one of its trials")  # fmt: skip
    ap.add_argument("--set", dest="settings", action="append", required=True,
                    metavar="NAME=VALUE", help="the change, e.g. crop_pad=1")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3, help="the first N of the report's seeds")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (2, as the report)")
    ap.add_argument("--out", type=Path, default=RESULTS / "recipe_variant")
    args = ap.parse_args()
    settings = dict(parse_setting(s) for s in args.settings)

    items, split_seeds = [], set()
    for source in args.sources:
        folder, _, trial = source.rpartition(":")
        results = json.loads((Path(folder) / "results.json").read_text())
        if results["settings"].get("train_limit"):
            raise SystemExit(f"{folder}: its report trained on a subset; use a full-split report")
        split_seeds.add(results["study"]["seed"])
        entry = next((m for m in results["models"] if str(m["trial"]) == trial), None)
        if entry is None:
            known = [m["trial"] for m in results["models"]]
            raise SystemExit(f"{folder}: no trial {trial!r} among {known}")
        config = changed(RunConfig.from_dict(entry["config"]), settings)
        for run in entry["runs"][: args.seeds]:
            items.append({
                "source": Path(folder).name, "trial": entry["trial"], "seed": run["seed"],
                "config": config.to_dict(), "epochs": config.train.epochs,
                "tta": results["settings"].get("tta", "none"),  # reports before --tta: none
                "report_val_accuracy": round(run["val"]["accuracy"], 4),
                "report_test_accuracy": round(run["test"]["accuracy"], 4),
            })  # fmt: skip
    if len(split_seeds) > 1:
        raise SystemExit("the reports' studies split the data with different seeds: run each alone")
    change = " ".join(f"{k}={v}" for k, v in settings.items())
    print(
        f"{cpu_name()}, {args.jobs} runs at a time x {threads_per_worker(args.jobs)} threads, "
        f"torch {torch.__version__}, code {tree_rev()}; {len(items)} runs with {change}",
        flush=True,
    )
    outcomes = map_in_processes(_run, items, args.jobs, partial(_setup, split_seeds.pop()), print)

    rows = []
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome.failure is not None:
            raise SystemExit(f"{item['source']} trial {item['trial']} seed {item['seed']}: "
                             f"{outcome.failure.message}")  # fmt: skip
        row = {k: v for k, v in item.items() if k not in ("config", "tta")} | {"change": change}
        rows.append(row | outcome.value)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "recipe_variant.csv")

    for key in dict.fromkeys((r["source"], r["trial"]) for r in rows):
        rs = [r for r in rows if (r["source"], r["trial"]) == key]
        diffs = [r["test_accuracy"] - r["report_test_accuracy"] for r in rs]
        print(f"\n{key[0]} trial {key[1]}, {rs[0]['epochs']} epochs, {len(rs)} seeds:")
        for r in rs:
            print(f"  seed {r['seed']}: {change} val {r['val_accuracy']:.4f} test "
                  f"{r['test_accuracy']:.4f}; the report's val {r['report_val_accuracy']:.4f} "
                  f"test {r['report_test_accuracy']:.4f} ({r['train_seconds']:.0f} s)")  # fmt: skip
        print(f"  {change:<14} val {mean_std([r['val_accuracy'] for r in rs])}  "
              f"test {mean_std([r['test_accuracy'] for r in rs])}")  # fmt: skip
        print(f"  the report's   val {mean_std([r['report_val_accuracy'] for r in rs])}  "
              f"test {mean_std([r['report_test_accuracy'] for r in rs])}")  # fmt: skip
        print(f"  paired test difference {' '.join(f'{d:+.4f}' for d in diffs)}, mean "
              f"{statistics.mean(diffs):+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
