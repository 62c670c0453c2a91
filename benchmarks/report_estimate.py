"""How well the search-seconds rule estimates a report's re-training time: the figures behind
SIDE_BY_SIDE_SLOWDOWN (the rule a report falls back on where a probe diverges; the probe itself:
report_probe.py).

    .venv/bin/python benchmarks/report_estimate.py

Reads the default studies' committed outputs (nothing is trained): each finalist's training
seconds in the search (``trials.csv``) and its re-training runs' seconds (``results.json``).
Prints, per report, each finalist's slowdown (mean run seconds / (search seconds x the epochs
trained over the epochs searched)) and their mean, the re-training seconds taken, what
``final_budget`` estimates now for 2 x the search's epochs, and what it would choose under the
default ``--longer-within`` of 45 minutes, with the minutes the measured re-training would
have taken at that many epochs (its minutes scaled by the epochs, test scoring included).
Output:
``benchmarks/results/report_estimate.txt``.
"""

from __future__ import annotations

import csv
import json

from _common import RESULTS

from search.report.options import ReportOptions
from search.report.retrain import (
    SIDE_BY_SIDE_SLOWDOWN,
    final_budget,
    final_epochs,
    search_estimate,
)

STUDIES = (
    ("default_study", "2-core Intel Xeon, 2026-11-30"),
    ("default_study_d7b9eb3", "2-core AMD EPYC, 2026-12-05"),
    ("default_study_6ac4df5", "2-core Intel Xeon, 2026-12-05"),
    ("default_study_64f63d9", "2-core Intel Xeon, 2026-12-05, 29 epochs"),
)


def main() -> None:
    lines = [f"SIDE_BY_SIDE_SLOWDOWN = {SIDE_BY_SIDE_SLOWDOWN}"]
    for folder, machine in STUDIES:
        with open(RESULTS / folder / "trials.csv", newline="") as f:
            rows = csv.DictReader(f)
            rows = [r for r in rows if r["train_seconds"]]
            seconds = {int(r["trial"]): float(r["train_seconds"]) for r in rows}
            search_epochs = {int(r["trial"]): float(r["epochs_run"]) for r in rows}
        res = json.loads((RESULTS / folder / "results.json").read_text())
        factor = 2  # the cnn space's REPORT_EPOCHS_FACTOR; a report may have trained less
        search, ratios = [], []
        for m in res["models"]:
            s = seconds[int(m["trial"])]
            runs = [r["seconds"] for r in m["runs"]]
            ratio = sum(runs) / len(runs) / (s * m["epochs"] / search_epochs[int(m["trial"])])
            search.append(s)
            ratios.append(ratio)
            lines.append(
                f"{folder} ({machine}): trial {m['trial']}: search {s:.1f} s, "
                f"runs {', '.join(f'{r:.0f}' for r in runs)} s, slowdown {ratio:.2f}"
            )
        seeds = len(res["models"][0]["runs"])
        runs = search_estimate(search, 1.0, 2)  # two runs side by side, the full split
        _, why = final_budget(factor, runs, seeds, 2, float("inf"))
        lines.append(
            f"{folder}: mean slowdown {sum(ratios) / len(ratios):.2f}; re-training took "
            f"{res['seconds'] / 60:.1f} min at {res['models'][0]['epochs']} epochs; at 2 x: {why}"
        )
        within = ReportOptions(study="-").longer_within
        own = int(search_epochs[int(res["models"][0]["trial"])])
        took = res["seconds"] / 60 / (int(res["models"][0]["epochs"]) / own)  # per x own budget
        chosen, why = final_budget(factor, runs, seeds, 2, within, own_epochs=own)
        epochs = final_epochs(own, chosen)
        lines.append(
            f"{folder} at --longer-within {within:g}: {why} At {epochs} epochs the measured "
            f"re-training would take about {took * epochs / own:.1f} min."
        )
    text = "\n".join(lines)
    print(text)
    (RESULTS / "report_estimate.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
