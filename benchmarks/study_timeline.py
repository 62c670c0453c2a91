"""What a finished study did over time: the figures the README gives for the default study.

    .venv/bin/python benchmarks/study_timeline.py --storage sqlite:///studies.db --study cnn
        [--out benchmarks/results/default_study]

Reads the study (nothing is trained) and writes under ``--out``:
``timeline.csv``, every validation of every trial (minutes since the study's first trial
started, trial, state, images seen as epochs, validation accuracy; times as in
``search_quality.py``: each trial's per-pass ``history`` anchored at its end), and
``trials.csv``, one row per trial (state, start and end in minutes, parameters, epochs trained,
training seconds, final validation loss and accuracy, warm-start name or "sampled", why it
was pruned, its parameters as JSON). It prints
the study's length, its trials by state, the epochs trained in all, the minutes at which any
validation first reached 0.91 / 0.92 / 0.93 / 0.94 / 0.945, and the best completed trials.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import RESULTS, write_csv
from search_quality import engine_timeline, read_trials

THRESHOLDS = (0.91, 0.92, 0.93, 0.94, 0.945)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", default="cnn")
    p.add_argument("--out", type=Path, default=RESULTS / "default_study")
    args = p.parse_args()

    import optuna

    from search.storage import get_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=get_storage(args.storage))
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    began = min(t.datetime_start for t in frozen.values() if t.datetime_start)
    trials = read_trials(args.storage, began)
    points = engine_timeline(trials)
    state = {t["number"]: t["state"] for t in trials}

    def minutes(x: float | None) -> float | None:
        return None if x is None else round(x / 60, 3)

    write_csv(
        [
            {
                "minutes": minutes(pt["seconds"]),
                "trial": pt["trial"],
                "state": state[pt["trial"]],
                "val_accuracy": round(pt["val_accuracy"], 4),
            }
            for pt in points
        ],
        args.out / "timeline.csv",
    )
    rows = []
    for t in trials:
        ft = frozen[t["number"]]
        ua = ft.user_attrs
        rows.append(
            {
                "trial": t["number"],
                "state": t["state"],
                "start_min": minutes(t["start"]),
                "end_min": minutes(t["end"]),
                "origin": ua.get("warm_start") or ("retry" if "failed_trial" in ft.system_attrs
                                                   else "sampled"),
                "n_params": ua.get("n_params"),
                "epochs_run": ua.get("epochs_run"),
                "train_seconds": None if ua.get("seconds") is None else round(ua["seconds"], 1),
                "val_loss": None if ft.value is None else round(ft.value, 4),
                "val_accuracy": None if ua.get("val_accuracy") is None
                else round(ua["val_accuracy"], 4),
                "why": ua.get("pruned_reason") or ua.get("fail_reason") or "",
                "params": json.dumps(ft.params, sort_keys=True),
            }
        )  # fmt: skip
    write_csv(rows, args.out / "trials.csv")

    end = max((t["end"] or 0.0) for t in trials)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t["state"]] = by_state.get(t["state"], 0) + 1
    epochs = sum(r["epochs_run"] or 0 for r in rows)
    print(f"study {args.study!r}: {len(trials)} trials over {end / 60:.1f} min, {by_state}")
    print(f"epochs trained in all (images seen / training-split size): {epochs:.1f}")
    for x in THRESHOLDS:
        first = next((pt for pt in points if pt["val_accuracy"] >= x), None)
        where = "never" if first is None else (
            f"{first['seconds'] / 60:.1f} min (trial {first['trial']}, "
            f"{next(r['origin'] for r in rows if r['trial'] == first['trial'])})"
        )  # fmt: skip
        print(f"  validation accuracy >= {x}: {where}")
    complete = sorted((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["val_loss"])
    print("completed trials by validation loss (the objective):")
    for r in complete[:5]:
        print(
            f"  trial {r['trial']:3d} {r['origin']:48.48} loss {r['val_loss']:.4f} "
            f"acc {r['val_accuracy']:.4f} {r['n_params']:>9,} params, ended {r['end_min']:.1f} min"
        )


if __name__ == "__main__":
    main()
