"""What the cnn space's ``any`` family costs a study: its trials, their time, where TPE drew it.

    .venv/bin/python benchmarks/family_share.py [--runs DIR ...] [--studies DIR ...]
        [--out benchmarks/results/family_share.txt]

Trains nothing. Reads runs of ``benchmarks/search_quality.py`` (each run's ``.json``: its trials
with parameters, start and end times; arms a, c and f) and ``run.sh`` studies written by
``benchmarks/study_timeline.py`` (``trials.csv``: each trial's start and end minute and its
parameters). For each: how many trials drew ``any``, how many of them after the study's first
11 trials (TPE's start-up of 10 and the survey's best trained again; with a warm start the
first trial is the warm start, so the window is the same 11 trial numbers), the longest run of
consecutive ``any`` trials, and the share of the study's trial time (end - start, summed over
finished trials) that ``any`` trials took.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from _common import RESULTS

FIRST = 11  # trials 0-10: TPE's 10 start-up draws and the survey's best trained again

Row = tuple[int, str, float]  # trial number, family, seconds


def from_run(path: Path) -> list[Row]:
    record = json.loads(path.read_text())
    return [
        (t["number"], t.get("params", {}).get("family", "?"), t["end"] - t["start"])
        for t in record["trials"]
        if t.get("end") is not None and t.get("start") is not None
    ]


def from_study(folder: Path) -> list[Row]:
    with open(folder / "trials.csv", newline="") as f:
        return [
            (
                int(r["trial"]),
                json.loads(r["params"]).get("family", "?"),
                60 * (float(r["end_min"]) - float(r["start_min"])),
            )
            for r in csv.DictReader(f)
            if r["end_min"]
        ]


def label(path: Path) -> str:
    """A run's or study's name: its path under benchmarks/results/, or its last three parts."""
    try:
        return str(path.resolve().relative_to(RESULTS))
    except ValueError:
        return "/".join(path.resolve().parts[-3:])


def line(name: str, rows: list[Row]) -> str:
    rows.sort()
    fams = [f for _, f, _ in rows]
    total = sum(s for *_, s in rows)
    any_s = sum(s for _, f, s in rows if f == "any")
    after = sum(f == "any" for n, f, _ in rows if n >= FIRST)
    longest = run = 0
    for f in fams:
        run = run + 1 if f == "any" else 0
        longest = max(longest, run)
    return (
        f"{name:56s} trials {len(rows):3d}  any {fams.count('any'):3d} "
        f"(after trial {FIRST - 1}: {after:3d}, longest streak {longest:2d})  "
        f"time on any {any_s:6.0f} s of {total:6.0f} s = {any_s / total:5.1%}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=[RESULTS / "search_quality_runs", *sorted(RESULTS.glob("*/search_quality_runs"))],
        help="folders of search_quality runs (default every results/**/search_quality_runs)",
    )
    ap.add_argument(
        "--studies",
        type=Path,
        nargs="*",
        default=sorted(RESULTS.glob("default_study_*/trials.csv")),
        help="run.sh study folders (default every results/default_study_*/ with trials.csv)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "family_share.txt")
    args = ap.parse_args()
    lines = [f"{__doc__.splitlines()[0]}", ""]
    for folder in args.runs:
        for path in sorted(folder.glob("[acf]-s*.json")):
            rows = from_run(path)
            if any(f != "?" for _, f, _ in rows):  # runs of the space before its families
                lines.append(line(label(path), rows))
    for study in args.studies:
        folder = study.parent if study.name == "trials.csv" else study
        rows = from_study(folder)
        if any(f != "?" for _, f, _ in rows):  # studies of the space before its families
            lines.append(line(label(folder), rows))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
