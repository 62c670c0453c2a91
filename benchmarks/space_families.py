"""What the cnn space's families draw: the README's figures for them, from random draws only.

    .venv/bin/python benchmarks/space_families.py [--old REV] [--n 3000] [--vgg-draws 400]

No training. Draws ``--n`` configurations of the cnn space at git revision ``--old`` (default
7edd106, before the families) with Optuna's random sampler (seed 0) and prints the share with a
modern recipe (AdamW or Nesterov, cosine, crop 1-2, flip), with a VGG-style architecture (two or
more blocks, all 3x3, max pooling, batch norm), with both, and that are points of the family
``vgg``; then draws ``--vgg-draws`` configurations of the space now (seed 0) and prints how many
picked each family and the multiply-adds per image of the ``vgg`` ones (median, maximum),
against the VGG-style warm start's. Output: benchmarks/results/space_families.txt (copy of the
console).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
from pathlib import Path

import optuna
from _common import RESULTS, ROOT  # puts the repository on sys.path

from search.models import build_model, multiply_adds
from spaces import cnn


def old_space(rev: str):
    text = subprocess.run(
        ["git", "show", f"{rev}:spaces/cnn.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_cnn.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="7edd106")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--vgg-draws", type=int, default=400)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lines = []

    old = old_space(args.old)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    recipe = arch = both = vgg = 0
    for _ in range(args.n):
        trial = study.ask()
        cfg = old.space(trial)
        study.tell(trial, 0.0)
        t, m = cfg.train, cfg.model
        r = t.optimizer in ("adamw", "nesterov") and t.schedule == "cosine"
        r = r and t.crop_pad in (1, 2) and t.flip
        a = len(m.blocks) >= 2 and m.pool == "max" and m.regularizer == "bn"
        a = a and all(b.kernel == 3 for b in m.blocks)
        recipe, arch, both, vgg = recipe + r, arch + a, both + (r and a), vgg + cnn.is_vgg(cfg)
    lines.append(
        f"cnn space at {args.old}, {args.n} random draws: modern recipe {recipe / args.n:.1%}, "
        f"VGG-style architecture {arch / args.n:.1%}, both {both}, points of family vgg {vgg}"
    )

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    costs: dict[str, list[int]] = {"any": [], "vgg": []}
    for _ in range(args.vgg_draws):
        trial = study.ask()
        cfg = cnn.space(trial)
        study.tell(trial, 0.0)
        costs[trial.params["family"]].append(multiply_adds(build_model(cfg.model)))
    warm = cnn.WARM_START["VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment"]
    lines.append(
        f"cnn space now, {args.vgg_draws} random draws: any {len(costs['any'])}, "
        f"vgg {len(costs['vgg'])}; multiply-adds per image of the vgg draws: median "
        f"{statistics.median(costs['vgg']) / 1e6:.2f}M, max {max(costs['vgg']) / 1e6:.2f}M "
        f"(VGG-style warm start {multiply_adds(build_model(warm.model)) / 1e6:.2f}M)"
    )
    print("\n".join(lines))
    (RESULTS / "space_families.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
