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
constant liar counts as bad) are not replayed.
"""

from __future__ import annotations

import argparse
import collections
import json
import warnings
from pathlib import Path

from _common import RESULTS, ROOT

STEP_FIRST = (10_000, 30_000, 50_000)  # the engine's passes of the first epoch on 50k images
EPOCH = 50_000


def step(i: int) -> int:
    return STEP_FIRST[i] if i < len(STEP_FIRST) else EPOCH * (i - 1)


def replay(run: Path, first: int, draws: int, sampler: str) -> collections.Counter:
    import optuna

    from search.registry import get_space, make_sampler, start_prior

    record = json.loads(run.with_suffix(".json").read_text())
    scores = collections.defaultdict(list)
    for line in run.with_suffix(".jsonl").read_text().splitlines():
        p = json.loads(line)
        scores[p["trial"]].append(p["val_accuracy"])
    space = get_space("cnn")
    study = optuna.create_study(sampler=make_sampler(sampler, record["seed"], start_prior("cnn")))
    state = optuna.trial.TrialState
    for t in record["trials"][:first]:
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
    ap.add_argument("--out", type=Path, default=RESULTS / "tpe_replay.txt")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    where = args.dir.resolve().relative_to(ROOT)
    lines = [f"replay of the first {args.first} trials of each run in {where}; {args.draws} draws"]
    for name in args.runs.split(","):
        run = args.dir / name
        record = json.loads(run.with_suffix(".json").read_text())
        told = [t for t in record["trials"][: args.first] if t["state"] in ("COMPLETE", "PRUNED")]
        told_families = collections.Counter(t["params"]["family"] for t in told)
        actual = collections.Counter(
            t["params"]["family"] for t in record["trials"][args.first : args.first + args.draws]
        )
        for sampler in ("tpe", "tpe-independent"):
            got = replay(run, args.first, args.draws, sampler)
            lines.append(
                f"{name}: told {dict(sorted(told_families.items()))}; {sampler} draws next "
                f"{dict(sorted(got.items()))}; the run itself drew {dict(sorted(actual.items()))} "
                f"in trials {args.first}-{args.first + args.draws - 1}"
            )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
