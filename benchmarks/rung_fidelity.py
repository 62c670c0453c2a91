"""How well does a trial's validation accuracy early on predict the one it ends with?

    .venv/bin/python benchmarks/rung_fidelity.py [--runs benchmarks/results]
        [--out benchmarks/results/rung_fidelity.csv]

Reads the timelines that ``benchmarks/search_quality.py`` keeps of every run of the project's
engine (``*/search_quality_runs/{a,b,c,f,g}-s*.jsonl`` under ``--runs``: every validation of
every trial, in order), keeps the trials that trained their whole budget (the 17 validations of a
15-epoch trial: after 10k, 30k and 50k images, then every 50k up to 750k), counts a trial once
where several result folders hold the same run, and prints, for each validation point, the
Spearman correlation between the accuracy there and the final accuracy: over all those trials,
and over those already at ``--top`` or more at the first rung (10k images), the field a survey's
best and the trials that pass the first rung come from. The rungs of the default successive
halving fall at the 10k, 30k, 100k and 300k points. Writes one row per point to ``--out``
(the console output: ``rung_fidelity.txt`` beside it).

No training: it reads only what the committed benchmark runs recorded.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from _common import RESULTS, write_csv  # puts the repository on sys.path
from search_quality import ENGINE_ARMS, RUNS  # the peers (d, e) validate on their own schedules

# Images seen at each validation of a 15-epoch trial (trainer: 1/5 and 3/5 of the first epoch,
# then every epoch).
POINTS = [10_000, 30_000, 50_000] + [50_000 * e for e in range(2, 16)]


def timelines(root: Path) -> list[list[float]]:
    """Every fully trained trial's validation accuracies, each distinct run once."""
    seen: dict[tuple[float, ...], list[float]] = {}
    for path in sorted(root.glob(f"**/{RUNS}/*.jsonl")):
        if path.name.split("-")[0] not in ENGINE_ARMS:
            continue
        by_trial: dict[int, list[float]] = defaultdict(list)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            by_trial[row["trial"]].append(float(row["val_accuracy"]))
        for accs in by_trial.values():
            if len(accs) == len(POINTS):
                seen[tuple(round(a, 4) for a in accs)] = accs
    return list(seen.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=RESULTS)
    p.add_argument("--top", type=float, default=0.75, help="first-rung accuracy of the field")
    p.add_argument("--out", type=Path, default=RESULTS / "rung_fidelity.csv")
    args = p.parse_args()
    from scipy.stats import spearmanr

    runs = timelines(args.runs)
    if len(runs) < 5:
        raise SystemExit(f"only {len(runs)} fully trained trials under {args.runs}: need 5")
    field = [r for r in runs if r[0] >= args.top]
    final_all = [r[-1] for r in runs]
    final_field = [r[-1] for r in field]
    lines = [
        f"{len(runs)} trials trained their whole 15 epochs in the runs under {args.runs}; "
        f"{len(field)} of them had {args.top} or more validation accuracy at 10k images "
        f"(their final accuracy {min(final_field):.4f}-{max(final_field):.4f}).",
        "Spearman correlation between the validation accuracy after N images and the final one:",
        f"{'images':>8} {'epoch':>6} {'all':>6} {'field':>6}",
    ]
    rows = []
    for i, images in enumerate(POINTS[:-1]):
        rho_all = float(spearmanr([r[i] for r in runs], final_all).statistic)
        rho_field = float(spearmanr([r[i] for r in field], final_field).statistic)
        rows.append(
            {
                "images": images,
                "epoch": images / 50_000,
                "spearman_all": round(rho_all, 3),
                "spearman_field": round(rho_field, 3),
                "trials_all": len(runs),
                "trials_field": len(field),
            }
        )
        lines.append(f"{images:>8} {images / 50_000:>6.1f} {rho_all:>6.2f} {rho_field:>6.2f}")
    print("\n".join(lines))
    write_csv(rows, args.out)
    args.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
