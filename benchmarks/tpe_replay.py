"""What TPE draws next after a recorded start-up: replay a Search quality run, count families.

    .venv/bin/python benchmarks/tpe_replay.py [--runs a-s0,a-s1,a-s2] [--first 11] [--draws 20]
        [--dir benchmarks/results/search_quality_runs] [--out benchmarks/results/tpe_replay.txt]

Trains nothing. For each run of ``benchmarks/search_quality.py`` (its ``.json`` holds every
trial's parameters and state, its ``.jsonl`` every validation's accuracy), the run's first
``--first`` trials are told to a new study with the cnn space's prior and the default sampler
(and ``tpe-independent``): each trial enqueued with its parameters, its validations reported at
the engine's steps (images seen: 10k, 30k, 50k, then every 50k), then told complete or pruned
as it was. The run's scores are accuracies, not the losses the study minimised, so a trial's
reported value is 1 - accuracy: the order within a step, which is what TPE uses, can differ a
little from the losses'. Then the sampler is asked ``--draws`` times for the next trial (each
told failed, which TPE ignores, so every draw sees the same history) and the ``family`` of each
draw is counted. The sampler's seed is the run's seed; running trials (which the engine's
constant liar counts as bad) are not replayed. The sampler is TPE with the space's START_PRIOR
but not its KEEP_PRIOR, so that what TPE itself would draw shows; ``--keep-prior`` gives it the
KEEP_PRIOR too, as the engine does.

    .venv/bin/python benchmarks/tpe_replay.py --study-dir benchmarks/results/default_study_b44c72a
        [--upto 13,16,21,31] [--warm 0,1] [--seed 42] [--out .../tpe_replay_warm.txt]

The same for a ``run.sh`` study (its ``trials.csv`` and ``timeline.csv`` from
``benchmarks/study_timeline.py``): for each N of ``--upto``, the study's trials below N that
are not ``--warm`` (the warm starts to leave out), then the same with each of them added and
with all of them, so that what those trials alone change in TPE's next draws shows.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import warnings
from pathlib import Path

from _common import RESULTS, ROOT

STEP_FIRST = (10_000, 30_000, 50_000)  # the engine's passes of the first epoch on 50k images
EPOCH = 50_000


def step(i: int) -> int:
    return STEP_FIRST[i] if i < len(STEP_FIRST) else EPOCH * (i - 1)


Trial = dict  # number, state, params
Scores = dict  # trial number -> its validation accuracies in order


def load_run(run: Path) -> tuple[int, list[Trial], Scores]:
    """A Search quality run: its seed, trials and scores."""
    record = json.loads(run.with_suffix(".json").read_text())
    scores: Scores = collections.defaultdict(list)
    for line in run.with_suffix(".jsonl").read_text().splitlines():
        p = json.loads(line)
        scores[p["trial"]].append(p["val_accuracy"])
    return record["seed"], record["trials"], scores


def load_study_dir(folder: Path) -> tuple[list[Trial], Scores]:
    """A study written by benchmarks/study_timeline.py: its trials and scores."""
    with open(folder / "trials.csv", newline="") as f:
        trials = [
            {"number": int(r["trial"]), "state": r["state"], "params": json.loads(r["params"])}
            for r in csv.DictReader(f)
        ]
    scores: Scores = collections.defaultdict(list)
    with open(folder / "timeline.csv", newline="") as f:
        for r in csv.DictReader(f):
            scores[int(r["trial"])].append(float(r["val_accuracy"]))
    return trials, scores


def replay(
    trials: list[Trial], scores: Scores, seed: int, draws: int, sampler: str, keep: bool = False
) -> collections.Counter:
    """Tell ``trials`` to a new study, then count the families of ``draws`` draws."""
    import optuna

    from search.registry import get_space, keep_prior, make_sampler, start_prior

    space = get_space("cnn")
    kept = keep_prior("cnn") if keep else ()
    study = optuna.create_study(sampler=make_sampler(sampler, seed, start_prior("cnn"), kept))
    state = optuna.trial.TrialState
    for t in trials:
        if t["state"] not in ("COMPLETE", "PRUNED") or not scores[t["number"]]:
            continue
        study.enqueue_trial(t["params"])
        trial = study.ask()
        space.space(trial)
        values = [1 - a for a in scores[t["number"]]]
        for i, v in enumerate(values):
            trial.report(v, step(i))
        if t["state"] == "COMPLETE":
            study.tell(trial, values[-1])
        else:
            study.tell(trial, state=state.PRUNED)
    families: collections.Counter = collections.Counter()
    for _ in range(draws):
        trial = study.ask()
        space.space(trial)
        families[trial.params["family"]] += 1
        study.tell(trial, state=state.FAIL)
    return families


def runs_lines(args: argparse.Namespace) -> list[str]:
    where = args.dir.resolve().relative_to(ROOT)
    lines = [
        f"replay of the first {args.first} trials of each run in {where}; {args.draws} draws"
        + (" (with the space's KEEP_PRIOR)" if args.keep_prior else "")
    ]
    for name in args.runs.split(","):
        seed, trials, scores = load_run(args.dir / name)
        first = trials[: args.first]
        told = [t for t in first if t["state"] in ("COMPLETE", "PRUNED")]
        told_families = collections.Counter(t["params"]["family"] for t in told)
        actual = collections.Counter(
            t["params"]["family"] for t in trials[args.first : args.first + args.draws]
        )
        for sampler in ("tpe", "tpe-independent"):
            got = replay(first, scores, seed, args.draws, sampler, args.keep_prior)
            lines.append(
                f"{name}: told {dict(sorted(told_families.items()))}; {sampler} draws next "
                f"{dict(sorted(got.items()))}; the run itself drew {dict(sorted(actual.items()))} "
                f"in trials {args.first}-{args.first + args.draws - 1}"
            )
    return lines


def study_lines(args: argparse.Namespace) -> list[str]:
    trials, scores = load_study_dir(args.study_dir)
    warm = [int(n) for n in args.warm.split(",")]
    by_number = {t["number"]: t for t in trials}
    where = args.study_dir.resolve().relative_to(ROOT)
    lines = [
        f"replay of {where} (seed {args.seed}), with and without trials {args.warm}; "
        f"{args.draws} draws of the default sampler (tpe) each"
        + (" (with the space's KEEP_PRIOR)" if args.keep_prior else "")
    ]
    for upto in (int(n) for n in args.upto.split(",")):
        rest = [t for t in trials if t["number"] < upto and t["number"] not in warm]
        adds = [[n] for n in warm] + ([warm] if len(warm) > 1 else [])
        for add in [[], *adds]:
            told = sorted([by_number[n] for n in add] + rest, key=lambda t: t["number"])
            got = replay(told, scores, args.seed, args.draws, "tpe", args.keep_prior)
            what = "+".join(map(str, add)) if add else "none"
            lines.append(
                f"trials below {upto}, of {args.warm} told: {what:>5s} ({len(told)} trials): "
                f"next draws {dict(sorted(got.items()))}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs", default="a-s0,a-s1,a-s2", help="runs to replay (default a-s0,a-s1,a-s2)"
    )
    ap.add_argument(
        "--first",
        type=int,
        default=11,
        help="trials replayed (default 11: start-up + survey's best)",
    )
    ap.add_argument("--draws", type=int, default=20, help="draws asked after them (default 20)")
    ap.add_argument("--dir", type=Path, default=RESULTS / "search_quality_runs")
    ap.add_argument(
        "--study-dir", type=Path, help="replay a run.sh study's trials.csv + timeline.csv instead"
    )
    ap.add_argument("--upto", default="13,16,21,31", help="with --study-dir: trials below N")
    ap.add_argument("--warm", default="0,1", help="with --study-dir: the trials left out / added")
    ap.add_argument("--seed", type=int, default=42, help="with --study-dir: the study's seed")
    ap.add_argument(
        "--keep-prior",
        action="store_true",
        help="give TPE the space's KEEP_PRIOR as the engine does",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="output (default results/tpe_replay.txt; tpe_replay_warm.txt with --study-dir)",
    )
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.study_dir:
        lines = study_lines(args)
        out = args.out or RESULTS / "tpe_replay_warm.txt"
    else:
        lines = runs_lines(args)
        out = args.out or RESULTS / "tpe_replay.txt"
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
