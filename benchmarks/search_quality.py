"""Search quality: best validation accuracy against wall time, five ways, equal budgets, seeds.

    .venv/bin/python benchmarks/search_quality.py [--budget 600] [--seeds 0,1,2]
        [--arms a,b,c,d,e,f,g] [--baseline REV] [--single-seed-arms b,d] [--train-limit N]
        [--out benchmarks/results] [--keep-arms d,e] [--summarize-only]

Every run is one fresh study in its own process, stored in its own temporary SQLite file, on
the stratified 50k/10k split of Fashion-MNIST made with the run's seed (``--train-limit N``: a
stratified N-image subset of the 50k for training; validation always the whole 10k), and is
stopped at the same wall-clock budget: SIGTERM at ``--budget`` seconds after its launch (SIGKILL
30 s later if still alive); nothing after the budget counts. The arms:

- **a** ``fmnist-search run --space cnn --no-warm-start --timeout BUDGET --trials 100000
  --seed S --storage sqlite:///...``: the project's defaults (multivariate TPE whose start-up
  follows the space's START_PRIOR, and every draw of the KEEP_PRIOR's parameters; successive
  halving over training images seen with the not-learning rule, 15 epochs, the tensor-resident
  trainer with bf16 autocast and channels_last where the CPU computes bf16 natively), no warm
  start.
- **b** the same with warm start (the three known configurations enqueued first).
- **c** the same as a with ``--sampler random``: same pruner, trainer and space.
- **d** ``benchmarks/peers/optuna_pytorch_simple.py``: Optuna's published PyTorch example
  (optuna-examples ``pytorch/pytorch_simple.py``) as published — an MLP space (1-3 layers of
  4-128 units, dropout 0.2-0.5), Adam/RMSprop/SGD with lr 1e-5..1e-1, batch 128, 10 epochs of
  3,840 training images each, validated on 1,280 images, default TPE + MedianPruner maximising
  that accuracy, float32 on the CPU — reading the same split; each completed trial is also scored
  on the whole 10k validation split, and that score is what is compared (its header lists every
  change and why).
- **e** ``benchmarks/peers/optuna_by_hand.py``: Optuna done well by hand — the project's cnn
  space and model builder, TPESampler(seed) + MedianPruner, ``study.optimize(timeout=BUDGET)``,
  a plain DataLoader loop honouring the whole recipe (normalisation, optimizer, cosine schedule,
  label smoothing, torchvision v2 crop/flip/erasing per image), 15 epochs, validation loss
  reported per epoch on the whole 10k and pruned on; bf16 autocast + channels_last where the CPU
  computes bf16 natively, else float32 (its docstring has the details).
- **f** (not in the default set; ``--arms f``) the same as a with ``--sampler tpe-independent``:
  TPE with one density per parameter (Optuna's TPESampler default) instead of multivariate +
  group, to measure that setting.
- **g** (not in the default set; ``--arms g [--baseline REV]``) the same as a on the code of an
  earlier git revision (``git archive REV``, imported through ``PYTHONPATH``; default d0d64a8,
  before the survey's best trained on), to measure a change of the engine side by side.

With the same seed, arms c and e sample the same first 10 configurations (random draws with the
study's seed, over the same space; e's TPE starts with them): they differ first in how they
train and prune those. Arms a and f draw the ``family`` of their trials from the cnn space's
START_PRIOR (KEEP_PRIOR: after the start-up too), so they sample other configurations from the
first.

Every run's process gets the same threads: ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` = all
cores, and the peers also call ``torch.set_num_threads`` with that number. Runs are interleaved
(for each seed, every arm in turn) so that slow spells of a shared machine hit all arms alike;
arms in ``--single-seed-arms`` run with the first seed only (the default, b and d with one seed
and a, c, e with three, is 11 runs: 110 minutes at the default budget).

What is measured: the best validation accuracy (on the whole 10k validation split) of any
evaluation finished by time t, t in {0.1, 0.2, 0.5, 1} x the budget, counted from the run's
launch (start-up and data loading included). Arms a-c validate after every training pass
(images seen 1/5, 3/5, 1 epoch, then every epoch); their times come from each trial's
``history`` (``seconds`` since its training started), anchored at the trial's end for finished
trials (so the sampling and set-up before training, and the trial's closing writes, count
against them: a completed trial's closing includes drawing its two dashboard artifacts, so its
scores may be dated a second or two late; each run's ``.json`` lists these overheads) and, for
the trial the stop interrupted, at its start plus the largest such overhead of the run's
finished trials. Arm e validates after every epoch, arm d after each
completed trial; both write the time of each score as it happens. Also counted by each time:
trials started and trials finished (complete or pruned, any rung).

Writes to ``--out``: ``search_quality.csv`` (arm x seed x time), ``search_quality_summary.csv``
(arm x time: mean, std, min, max over seeds), ``search_quality.png`` (mean line, min-max band),
``search_quality.json`` (machine, arms' exact settings, runs) and, per run,
``search_quality_runs/ARM-sSEED.jsonl`` (its timeline: seconds, val_accuracy, trial), ``.json``
(its trials with their parameters, and how it stopped) and ``.log`` (its output), kept as each
run ends, so an interrupted benchmark keeps its finished runs; ``--keep-arms d,e`` re-runs the
other arms and keeps those arms' runs, settings and date ("measured") from ``--out``'s earlier
``search_quality.json`` (same budget and training subset; for a change that cannot affect
them, such as one to the engine's pruner for the peers); ``--summarize-only`` rebuilds the
tables and the plot from them (a run cut short by Ctrl-C is left out of them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

# _common puts the repository on sys.path
from _common import RESULTS, ROOT, export, on_tree, short_rev, tree_rev, write_csv

FRACTIONS = (0.1, 0.2, 0.5, 1.0)  # of the budget: the times the tables report
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL
PEERS = Path(__file__).resolve().parent / "peers"
RUNS = "search_quality_runs"  # per-run files, under --out
TRIALS = "100000"  # the engine arms' trial target: never reached, the budget stops them


@dataclass(frozen=True)
class Arm:
    key: str
    name: str  # for tables and the legend
    what: str  # one line on what it is


ARMS = {
    a.key: a
    for a in (
        Arm("a", "fmnist-search", "our defaults (TPE, SHA on images seen), no warm start"),
        Arm("b", "fmnist-search + warm start", "our defaults with the warm-start configurations"),
        Arm("c", "fmnist-search, random sampler", "random sampling, our pruner and trainer"),
        Arm("d", "Optuna PyTorch example", "optuna-examples pytorch_simple.py as published"),
        Arm("e", "Optuna by hand (cnn space)", "TPE + median pruner, DataLoader training"),
        Arm("f", "fmnist-search, independent TPE", "as a with TPE's per-parameter densities"),
        Arm("g", "fmnist-search, earlier revision", "as a on the code of --baseline REV"),
    )
}
DEFAULT_ARMS = "a,b,c,d,e"  # f (a sampler setting) and g (a revision) on request: --arms f ...
BASELINE = "d0d64a8"  # arm g's default revision: the code before the survey's best trained on
ENGINE_ARMS = {
    "a": ["--no-warm-start"],
    "b": [],
    "c": ["--sampler", "random", "--no-warm-start"],
    "f": ["--sampler", "tpe-independent", "--no-warm-start"],
    "g": ["--no-warm-start"],
}
FINISHED = ("COMPLETE", "PRUNED")


# --- running ---------------------------------------------------------------------------------


def fmnist_search() -> list[str]:
    script = Path(sys.executable).parent / "fmnist-search"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from search.cli import entry; entry()"]


def precision_for_peers() -> str:
    from search.training import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"


def arm_command(
    arm: str, seed: int, storage: str, timeline: Path, t0: float, args: argparse.Namespace
) -> list[str]:
    """The exact command line of one run."""
    limit = ["--train-limit", str(args.train_limit)] if args.train_limit else []
    if arm in ENGINE_ARMS:
        return [
            *fmnist_search(), "run", "--space", "cnn", *ENGINE_ARMS[arm],
            "--timeout", f"{args.budget:g}", "--trials", TRIALS, "--seed", str(seed),
            "--storage", storage, *limit,
        ]  # fmt: skip
    script = PEERS / ("optuna_pytorch_simple.py" if arm == "d" else "optuna_by_hand.py")
    extra = ["--precision", precision_for_peers()] if arm == "e" else []
    return [
        sys.executable, str(script), "--seed", str(seed), "--budget", f"{args.budget:g}",
        "--storage", storage, "--timeline", str(timeline), "--t0", repr(t0),
        "--threads", str(args.threads), *limit, *extra,
    ]  # fmt: skip


def arm_settings(arm: str, args: argparse.Namespace) -> dict:
    """What the metadata and the header say about an arm: its command, seeds and meaning."""
    cmd = arm_command(arm, 0, "sqlite:///RUN.db", Path("RUN.jsonl"), 0.0, args)
    if arm in ENGINE_ARMS:
        cmd = ["fmnist-search", *cmd[len(fmnist_search()) :]]
    else:
        cmd = ["python", str(Path(cmd[1]).relative_to(ROOT)), *cmd[2:]]
    line = " ".join(cmd).replace("--seed 0", "--seed S").replace("--t0 0.0", "--t0 LAUNCH")
    settings = {**asdict(ARMS[arm]), "command": line, "seeds": seeds_of(arm, args)}
    if arm in ENGINE_ARMS:
        settings["revision"] = tree_rev()  # the code the arm runs
    if arm == "g":
        settings["revision"] = args.baseline
        settings["what"] = f"as a on the code of {args.baseline}"
        settings["command"] = f"PYTHONPATH=<git archive {args.baseline}> {line}"
    return settings


def seeds_of(arm: str, args: argparse.Namespace) -> list[int]:
    return args.seeds[:1] if arm in args.single_seed_arms else args.seeds


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.pop("FMNIST_SEARCH_ARTIFACTS", None)  # dashboard artifacts stay beside each run's db
    env.pop("FMNIST_SEARCH_STORAGE", None)
    return env


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the run's process group, SIGKILL if it is still alive after STOP_GRACE."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def run_one(arm: str, seed: int, args: argparse.Namespace, runs: Path) -> dict:
    """Launch one run, stop it at the budget, save its timeline and trials; returns its record."""
    name = f"{arm}-s{seed}"
    timeline = runs / f"{name}.jsonl"
    for suffix in (".jsonl", ".json"):
        (runs / f"{name}{suffix}").unlink(missing_ok=True)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix=f"sq-{name}-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'study.db'}"
        began, t0 = datetime.now(), time.time()
        cmd = arm_command(arm, seed, storage, timeline, t0, args)
        with open(runs / f"{name}.log", "w") as log:
            env = thread_env(args.threads)
            if arm == "g":
                env = on_tree(env, args.baseline_tree)
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                proc.wait(timeout=max(0.0, args.budget - (time.time() - t0)))
                how = "exited"
            except subprocess.TimeoutExpired:
                stop(proc)
                how = "budget"
            except KeyboardInterrupt:
                stop(proc)
                how, interrupted = "interrupted", True
        trials = read_trials(storage, began)
        if arm in ENGINE_ARMS:
            points = engine_timeline(trials)
            timeline.write_text("".join(json.dumps(p) + "\n" for p in points))
    record = {
        "arm": arm,
        "seed": seed,
        "budget": args.budget,
        "train_limit": args.train_limit,
        "launched": began.isoformat(timespec="seconds"),
        "stopped": how,
        "exit_code": proc.returncode,
        "command": cmd,
        # each trial's configuration too, so that a run's fully trained trials can be told apart
        "trials": [
            {k: t[k] for k in ("number", "state", "start", "end", "params")} for t in trials
        ],
    }
    if arm in ENGINE_ARMS:
        record["trial_overheads"] = [round(x, 3) for x in trial_overheads(trials)]
    (runs / f"{name}.json").write_text(json.dumps(record, indent=1))
    if how == "exited" and proc.returncode != 0:
        tail = (runs / f"{name}.log").read_text().strip().splitlines()[-5:]
        print(f"  {name} exited early with code {proc.returncode}:", *tail, sep="\n    ")
    if interrupted:
        raise KeyboardInterrupt
    return record


def read_trials(storage: str, began: datetime) -> list[dict]:
    """Every trial of the run's one study: state, start and end (seconds since launch), and
    the engine's per-pass history where there is one. Empty if no study was created."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=None, storage=storage)
    except Exception:  # stopped before its study existed
        return []

    def since(when: datetime | None) -> float | None:
        return None if when is None else (when - began).total_seconds()

    return [
        {
            "number": t.number,
            "state": t.state.name,
            "start": since(t.datetime_start),
            "end": since(t.datetime_complete),
            "history": t.user_attrs.get("history") or [],
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]


def trial_overheads(trials: list[dict]) -> list[float]:
    """Seconds of each finished engine trial not spent in its training passes (sampling,
    set-up, the closing writes)."""
    return [
        t["end"] - t["start"] - t["history"][-1]["seconds"]
        for t in trials
        if t["state"] in FINISHED and t["history"] and t["end"] is not None
    ]


def engine_timeline(trials: list[dict]) -> list[dict]:
    """(seconds since launch, val accuracy, trial) of every validation of an engine run.

    A pass's ``seconds`` counts from its trial's training start, which follows the sampling and
    set-up after the trial's ``datetime_start``. A finished trial's passes are anchored at its
    end (an upper bound: its closing writes count too); the interrupted trial's at its start plus
    the run's largest overhead (end - start - training seconds) of a finished trial.
    """
    overhead = max(trial_overheads(trials), default=0.0)
    points = []
    for t in trials:
        if not t["history"] or t["start"] is None:
            continue
        if t["state"] in FINISHED and t["end"] is not None:
            anchor = t["end"] - t["history"][-1]["seconds"]
        else:
            anchor = t["start"] + overhead
        for h in t["history"]:
            points.append(
                {
                    "seconds": round(anchor + h["seconds"], 3),
                    "val_accuracy": h["val_accuracy"],
                    "trial": t["number"],
                }
            )
    return sorted(points, key=lambda p: p["seconds"])


# --- summarising ------------------------------------------------------------------------------


@dataclass
class Run:
    arm: str
    seed: int
    stopped: str
    points: list[tuple[float, float]]  # (seconds, val accuracy), within the budget, by time
    trials: list[dict]

    def best_by(self, seconds: float) -> float:
        return max((acc for at, acc in self.points if at <= seconds), default=math.nan)

    def counts_by(self, seconds: float) -> tuple[int, int]:
        started = sum(t["start"] is not None and t["start"] <= seconds for t in self.trials)
        finished = sum(
            t["state"] in FINISHED and t["end"] is not None and t["end"] <= seconds
            for t in self.trials
        )
        return started, finished


def load_run(runs: Path, arm: str, seed: int, budget: float) -> Run | None:
    meta = runs / f"{arm}-s{seed}.json"
    if not meta.exists():
        return None
    record = json.loads(meta.read_text())
    timeline = runs / f"{arm}-s{seed}.jsonl"
    lines = timeline.read_text().splitlines() if timeline.exists() else []
    points = []
    for line in lines:
        try:
            p = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the stop
            continue
        if p["seconds"] <= budget:
            points.append((p["seconds"], p["val_accuracy"]))
    return Run(arm, seed, record["stopped"], sorted(points), record["trials"])


def rows_per_run(runs: list[Run], budget: float) -> list[dict]:
    rows = []
    for r in runs:
        for f in FRACTIONS:
            at = f * budget
            started, finished = r.counts_by(at)
            rows.append(
                {
                    "arm": r.arm,
                    "seed": r.seed,
                    "fraction": f,
                    "seconds": round(at, 1),
                    "best_val_accuracy": _num(r.best_by(at)),
                    "evaluations": sum(s <= at for s, _ in r.points),
                    "trials_started": started,
                    "trials_finished": finished,
                    "stopped": r.stopped,
                }
            )
    return rows


def summary_rows(runs: list[Run], arms: list[str], budget: float) -> list[dict]:
    rows = []
    for arm in arms:
        mine = [r for r in runs if r.arm == arm]
        if not mine:
            continue
        for f in FRACTIONS:
            at = f * budget
            bests = [r.best_by(at) for r in mine]
            have = [b for b in bests if not math.isnan(b)]
            counts = [r.counts_by(at) for r in mine]
            full = len(have) == len(bests)  # a mean over the seeds that have a score would flatter
            rows.append(
                {
                    "arm": arm,
                    "name": ARMS[arm].name,
                    "fraction": f,
                    "seconds": round(at, 1),
                    "seeds": len(mine),
                    "seeds_with_a_score": len(have),
                    "mean": _num(statistics.fmean(have)) if full else "",
                    "std": _num(statistics.stdev(have)) if full and len(have) > 1 else "",
                    "min": _num(min(have)) if have else "",
                    "max": _num(max(have)) if have else "",
                    "trials_started_mean": round(statistics.fmean(c[0] for c in counts), 2),
                    "trials_finished_mean": round(statistics.fmean(c[1] for c in counts), 2),
                }
            )
    return rows


def _num(x: float) -> float | str:
    return "" if math.isnan(x) else round(x, 4)


def print_table(summary: list[dict], budget: float) -> None:
    marks = [f"best@{f * budget / 60:.3g}min" for f in FRACTIONS]
    print(f"\n{'arm':34s} {'seeds':>5s}" + "".join(f" {m:>17s}" for m in marks) + "  trials*")
    for arm in dict.fromkeys(r["arm"] for r in summary):
        rows = [r for r in summary if r["arm"] == arm]
        cells = []
        for r in rows:
            if r["mean"] == "":
                cells.append("-" if not r["seeds_with_a_score"] else f"({r['min']:.4f}..)")
            elif r["std"] == "":
                cells.append(f"{r['mean']:.4f}")
            else:
                cells.append(f"{r['mean']:.4f} ± {r['std']:.4f}")
        last = rows[-1]
        trials = f"{last['trials_started_mean']:g} / {last['trials_finished_mean']:g}"
        label = f"{arm} {ARMS[arm].name}"
        print(f"{label:34s} {rows[0]['seeds']:>5d}" + "".join(f" {c:>17s}" for c in cells), trials)
    print(
        "best validation accuracy by each time (mean ± std over seeds; '-': some seed had no "
        "score yet); trials*: started / finished (complete or pruned) by the budget, mean\n"
    )


def plot(runs: list[Run], arms: list[str], budget: float, meta: dict, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 721)
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    lows, highs = [], []
    for arm in arms:
        mine = [r for r in runs if r.arm == arm]
        if not mine:
            continue
        curves = np.array([[r.best_by(t) for t in grid] for r in mine])  # [seeds, grid]
        mean = curves.mean(0)  # NaN until every seed has a score
        lo, hi = np.fmin.reduce(curves, 0), np.fmax.reduce(curves, 0)  # NaN until any has one
        color = f"C{list(ARMS).index(arm)}"  # an arm keeps its colour in any subset
        final = mean[-1]
        label = f"{arm}: {ARMS[arm].name} ({len(mine)} seed{'s' * (len(mine) > 1)}"
        label += f", {final:.4f})" if not np.isnan(final) else ")"
        ax.plot(grid / 60, mean, color=color, linewidth=2, label=label, drawstyle="steps-post")
        if len(mine) > 1:
            ax.fill_between(grid / 60, lo, hi, color=color, alpha=0.18, step="post", linewidth=0)
        later = grid >= 0.1 * budget
        lows += [v for v in lo[later] if not np.isnan(v)]
        highs += [v for v in hi if not np.isnan(v)]
    ax.set_xlabel("wall time since launch (minutes)")
    ax.set_ylabel("best validation accuracy so far")
    subset = f", {meta['train_limit']:,} training images" if meta.get("train_limit") else ""
    ax.set_title(
        f"Search quality, {budget / 60:.3g} min per run ({meta['machine']['cpu']}{subset})",
        fontsize=9,
    )
    ax.set_xlim(0, budget / 60)
    if lows:
        ax.set_ylim(max(0.5, min(lows) - 0.01), max(highs) + 0.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.text(0.01, 0.01, "line: mean over seeds; band: min-max", fontsize=7, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def summarize(out: Path, meta: dict) -> None:
    runs_dir = out / RUNS
    budget = meta["budget"]
    arms = list(meta["arms"])
    runs = []
    for arm, settings in meta["arms"].items():
        for seed in settings["seeds"]:
            run = load_run(runs_dir, arm, seed, budget)
            if run is not None and run.stopped == "interrupted":  # it did not get its budget
                print(f"left out: {arm}-s{seed}, interrupted (its files stay in {runs_dir})")
            elif run is not None:
                runs.append(run)
    if not runs:
        print(f"no finished runs in {runs_dir}")
        return
    per_run = rows_per_run(runs, budget)
    summary = summary_rows(runs, arms, budget)
    print_table(summary, budget)
    write_csv(per_run, out / "search_quality.csv")
    write_csv(summary, out / "search_quality_summary.csv")
    plot(runs, arms, budget, meta, out / "search_quality.png")


# --- main -------------------------------------------------------------------------------------


def machine() -> dict:
    import torch

    from search.training import cpu_has_native_bf16, cpu_name, versions

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "native_bf16": cpu_has_native_bf16(),
        "cuda": torch.cuda.is_available(),
        **versions(),
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=600, help="seconds per run (default 600)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument(
        "--arms",
        default=DEFAULT_ARMS,
        help=f"comma-separated arms of {','.join(ARMS)} (default {DEFAULT_ARMS})",
    )
    ap.add_argument(
        "--single-seed-arms",
        default="b,d",
        help="arms run with the first seed only (default b,d; '' for none)",
    )
    ap.add_argument("--train-limit", type=int, default=None, help="stratified training subset")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    ap.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"arm g's git revision (default {BASELINE}: before the survey's best trained on)",
    )
    ap.add_argument(
        "--keep-arms",
        default="",
        help="arms not re-run: their runs are kept from --out's search_quality.json",
    )
    ap.add_argument(
        "--summarize-only",
        action="store_true",
        help="rebuild the tables and plot from --out's saved runs (other options are ignored)",
    )
    args = ap.parse_args()
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    args.single_seed_arms = {a.strip() for a in args.single_seed_arms.split(",") if a.strip()}
    args.keep_arms = [a.strip() for a in args.keep_arms.split(",") if a.strip()]
    args.arms = [a for a in args.arms if a not in args.keep_arms]
    unknown = sorted((set(args.arms) | args.single_seed_arms | set(args.keep_arms)) - set(ARMS))
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if not args.seeds or not args.arms:
        ap.error("give at least one seed and one arm")
    if args.budget <= 0:
        ap.error("--budget must be positive")
    if "g" in args.arms:
        args.baseline = short_rev(args.baseline)
    args.threads = os.cpu_count() or 1
    args.out = args.out.resolve()  # the runs' processes start in the repository root
    return args


def print_header(meta: dict) -> None:
    m = meta["machine"]
    print(
        f"machine: {m['cpu']}; torch {m['torch']}, optuna {m['optuna']}, python {m['python']}; "
        f"native bf16: {m['native_bf16']}; CUDA: {m['cuda']}"
    )
    subset = f", training on {meta['train_limit']:,} images" if meta["train_limit"] else ""
    print(
        f"budget {meta['budget']:g} s per run{subset}; every run: OMP_NUM_THREADS="
        f"MKL_NUM_THREADS={meta['threads']} (peers: torch.set_num_threads({meta['threads']}))"
    )
    for key, a in meta["arms"].items():
        seeds = ",".join(map(str, a["seeds"]))
        kept = f"; kept from the run of {a['measured']}" if "measured" in a else ""
        print(f"  {key} {a['name']} ({a['what']}), seeds {seeds}{kept}:\n      {a['command']}")


def kept_arms(args: argparse.Namespace, meta_path: Path) -> tuple[dict, dict]:
    """``--keep-arms``: (arm -> settings with the date measured, run key -> how it stopped)
    from the earlier ``search_quality.json``, checked to be comparable."""
    if not args.keep_arms:
        return {}, {}
    if not meta_path.exists():
        sys.exit(f"--keep-arms: {meta_path} not found; run those arms first")
    old = json.loads(meta_path.read_text())
    if (old["budget"], old["train_limit"]) != (args.budget, args.train_limit):
        sys.exit(
            f"--keep-arms: {meta_path} was measured with --budget {old['budget']:g} and "
            f"--train-limit {old['train_limit']}; pass the same to keep its runs"
        )
    arms, runs = {}, {}
    for arm in args.keep_arms:
        if arm not in old["arms"]:
            sys.exit(f"--keep-arms: arm {arm} is not in {meta_path}; run it first")
        arms[arm] = {**old["arms"][arm], "measured": old["arms"][arm].get("measured", old["date"])}
        runs.update({k: v for k, v in old["runs"].items() if k.split("-s")[0] == arm})
    return arms, runs


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # stop the running run too, as on Ctrl-C
    out: Path = args.out
    meta_path = out / "search_quality.json"
    if args.summarize_only:
        if not meta_path.exists():
            sys.exit(f"{meta_path} not found: run the benchmark first")
        meta = json.loads(meta_path.read_text())
        print_header(meta)
        summarize(out, meta)
        return
    runs_dir = out / RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    kept, kept_runs = kept_arms(args, meta_path)
    if "g" in args.arms:  # removed with the process
        baseline = tempfile.TemporaryDirectory(prefix="sq-baseline-")
        args.baseline_tree = export(args.baseline, Path(baseline.name))
    arms = {arm: arm_settings(arm, args) for arm in args.arms}
    plan = [(arm, seed) for seed in args.seeds for arm in args.arms if seed in seeds_of(arm, args)]
    meta = {
        "benchmark": "search_quality",
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "budget": args.budget,
        "train_limit": args.train_limit,
        "threads": args.threads,
        "fractions": FRACTIONS,
        "arms": {arm: (arms | kept)[arm] for arm in ARMS if arm in arms | kept},
        "plan": plan,
        "runs": dict(kept_runs),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    print_header(meta)
    print(f"{len(plan)} runs, interleaved: about {len(plan) * args.budget / 60:.0f} minutes")
    try:
        for i, (arm, seed) in enumerate(plan, 1):
            print(f"[{i}/{len(plan)}] arm {arm} seed {seed} ...", flush=True)
            record = run_one(arm, seed, args, runs_dir)
            run = load_run(runs_dir, arm, seed, args.budget)
            assert run is not None
            started, finished = run.counts_by(args.budget)
            print(
                f"  stopped: {record['stopped']}; trials started {started}, finished "
                f"{finished}; best val accuracy {run.best_by(args.budget):.4f}",
                flush=True,
            )
            meta["runs"][f"{arm}-s{seed}"] = record["stopped"]
            meta_path.write_text(json.dumps(meta, indent=1))
    except KeyboardInterrupt:
        print("interrupted: summarising the runs saved so far")
        meta_path.write_text(json.dumps(meta, indent=1))
        summarize(out, meta)
        sys.exit(130)
    summarize(out, meta)
    print(f"wrote {meta_path}")


if __name__ == "__main__":
    main()
