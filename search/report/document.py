"""The report as Markdown, one small function per section, from the typed results.

Each section returns its Markdown blocks; ``document`` joins them, blank line apart, into
report.md (index.html is rendered from that text). ``dashboard_summary`` reuses three sections.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from search.report.figures import FIGURES
from search.report.results import (
    GENERATOR,
    MeanStd,
    ModelResult,
    ReferenceRow,
    Results,
    Settings,
)
from search.report.text import epochs, fmt, fmt_ms, fmt_ref, plural

# --- Markdown blocks ----------------------------------------------------------------------------


def _heading(level: int, text: str) -> str:
    return f"{'#' * level} {text}"


def _bullets(items: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(_cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _figure(file: str, caption: str) -> str:
    """An image with its caption below it, visible in any Markdown viewer."""
    return f"![{caption}]({file})\n\n*{caption}*"


def _code(text: str) -> str:
    return f"```json\n{text}\n```"


def _join(blocks: Iterable[str]) -> str:
    return "\n\n".join(blocks) + "\n"


def _value(v: Any) -> str:
    """A hyperparameter: 4 significant digits keep small learning rates readable (3.2e-05)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --- sections -----------------------------------------------------------------------------------


def intro(r: Results) -> list[str]:
    st, se = r.study, r.settings
    n_runs = sum(len(m.runs) for m in r.models)
    seeds = plural(se.seeds, "seed")
    trials = ", ".join(f"{v} {k}" for k, v in st.counts.items() if v)
    if se.epochs:
        budget = f"{epochs(se.epochs)} each"
    elif se.epochs_factor > 1 and float(se.epochs_factor).is_integer():
        budget = (
            f"{se.epochs_factor:g} x each trial's own epoch budget (the {r.study.space} space's "
            "default; set with --epochs)"
        )
    elif se.epochs_factor > 1:
        budget = (
            f"{se.epochs_factor:g} x each trial's own epoch budget, rounded down (what was "
            "estimated to fit --longer-within; set with --epochs)"
        )
    else:
        budget = "each trial's own epoch budget"
    limit = se.train_limit if se.train_limit else "none (full split)"
    return [
        _heading(1, f"Fashion-MNIST report: study {st.name}"),
        f"Made {r.created} by `{r.command or GENERATOR}`. {_sentence_start(_which_trials(r))} "
        f"{'were each' if se.top > 1 else 'was'} re-trained from scratch with {seeds} on "
        f"{fmt(se.train_images)} training images, then scored once on the "
        f"{fmt(se.test_images)} test images ({plural(n_runs, 'run')} on {se.device}). Test "
        "figures are mean ± std over seeds.",
        _bullets(
            [
                f"study: {st.name} (space {st.space}, seed {st.seed}, storage {st.storage}); "
                f"trials: {trials}",
                f"re-training: {_asked(se)}, {seeds}, {budget}, "
                f"train limit {limit}, {fmt(se.val_images)} validation images",
                f"input normalisation: mean {fmt(se.normalization.mean)}, "
                f"std {fmt(se.normalization.std)} (training images, pixel / 255)",
                _tta_line(r),
            ]
        ),
    ]


def _which_trials(r: Results) -> str:
    """ "the 3 best completed trials of the study (by validation loss)", or the trials that
    --trial named."""
    se = r.settings
    if not se.trials_requested:
        return f"the {se.top} best completed trials of the study (by validation loss)"
    return f"{_named(se.trials_requested)} of the study (named with --trial)"


def _named(numbers: Sequence[int]) -> str:
    """ "trial 4", "trials 0 and 74", "trials 0, 26 and 74"."""
    *rest, last = [str(n) for n in sorted(numbers)]
    return f"trials {', '.join(rest)} and {last}" if rest else f"trial {last}"


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def _asked(se: Settings) -> str:
    if se.trials_requested:
        return f"{plural(len(se.trials_requested), 'trial')} named with --trial"
    return f"top {se.top} of {se.top_requested} asked"


def _tta_line(r: Results) -> str:
    flipped = [m.label for m in r.models if m.tta == "flip"]
    if r.settings.tta != "flip":
        return "test-time augmentation: none (--tta none): each image scored alone"
    if not flipped:
        return (
            "test-time augmentation: none of these models trained with random flips, so each "
            "image was scored alone"
        )
    every = len(flipped) == len(r.models)
    return (
        f"test-time augmentation (--tta flip): {'every model' if every else ', '.join(flipped)}"
        " (trained with random flips) scored on each image and its mirror image, predictions "
        "averaged, in the train, validation and test columns"
        + ("" if every else "; the others, trained without flips, on each image alone")
        + "; the learning curves are as trained, without it"
    )


def notes(r: Results) -> list[str]:
    return [_heading(2, "Notes"), _bullets(r.notes)] if r.notes else []


RESULTS_HEAD = (
    "model",
    "source",
    "parameters",
    "train acc",
    "val acc",
    "test acc",
    "test loss",
    "training time (s per run)",
)
SOURCES = {
    "seed report": "seed report (recorded there, not measured here)",
    "published": "published (not measured here)",
}


def _measured_row(m: ModelResult) -> list[str]:
    s = m.summary
    assert s is not None, "a model in the results is summarised"
    return [
        m.label,
        f"measured here, {plural(s.test_accuracy.n, 'seed')}",
        fmt(m.n_params),
        fmt_ms(s.train_accuracy),
        fmt_ms(s.val_accuracy),
        fmt_ms(s.test_accuracy),
        fmt_ms(s.test_loss),
        fmt_ms(s.seconds, 1),
    ]


def _reference_row(ref: ReferenceRow) -> list[str]:
    n_params = ref.n_params
    return [
        ref.model,
        SOURCES[ref.source],
        n_params if isinstance(n_params, str) else fmt(n_params),
        fmt_ref(ref.train_accuracy),
        fmt_ref(ref.val_accuracy),
        fmt_ref(ref.test_accuracy),
        fmt_ref(ref.test_loss),
        "–",
    ]


def results_table(r: Results, level: int = 2) -> list[str]:
    rows = [_measured_row(m) for m in r.models] + [_reference_row(ref) for ref in r.reference]
    return [
        _heading(level, "Results"),
        _table(RESULTS_HEAD, rows),
        "Train accuracy is measured on the training images in evaluation mode (no "
        "augmentation). Reference rows are the seed report's own results and published "
        "figures, copied with the precision their sources give; the seed models' "
        "parameter counts are counted from this project's presets of them.",
    ]


def best_model(r: Results, level: int = 2) -> list[str]:
    b = r.best
    return [
        _heading(level, "Best model (best.pt)"),
        f"{b.label}, seed {b.seed}: validation loss {fmt(b.val_loss)}, validation accuracy "
        f"{fmt(b.val_accuracy)}, test accuracy {fmt(b.test_accuracy)}, test loss "
        f"{fmt(b.test_loss)}. Chosen by {b.selected_by}. Use it with `fmnist-search predict "
        "IMAGE --model best.pt` or `fmnist-search evaluate --model best.pt`"
        + (
            " (it averages each image's predictions with its mirror image's)."
            if b.tta == "flip"
            else "."
        ),
    ]


ENSEMBLES_HEAD = (
    "ensemble",
    "networks",
    "parameters",
    "val acc",
    "val loss",
    "test acc",
    "test loss",
    "file",
)


def ensembles(r: Results, level: int = 2) -> list[str]:
    """The runs' ensembles; nothing where the report has none (one run in all)."""
    if not r.ensembles:
        return []
    chosen = next(e for e in r.ensembles if e.file)
    rows = [
        [
            e.label,
            str(len(e.members)),
            fmt(e.n_params),
            fmt(e.val.accuracy),
            fmt(e.val.loss),
            fmt(e.test.accuracy),
            fmt(e.test.loss),
            e.file or "",
        ]
        for e in r.ensembles
    ]
    gain = chosen.test.accuracy - r.best.test_accuracy
    return [
        _heading(level, "Ensembles (ensemble.pt)"),
        "The re-trained runs' class probabilities averaged (each run with its own test-time "
        "augmentation), at no extra training: each trial's runs, and every run. ensemble.pt is "
        "the ensemble with the lowest validation loss, chosen as best.pt is; the test set plays "
        "no part in the choice.",
        _table(ENSEMBLES_HEAD, rows),
        f"ensemble.pt ({chosen.label}): test accuracy {fmt(chosen.test.accuracy)} against "
        f"best.pt's {fmt(r.best.test_accuracy)} ({gain:+.4f}), at {len(chosen.members)} times "
        "best.pt's cost per image (one forward pass per network, doubled by flips where the "
        "network uses them). Use it "
        "with `fmnist-search predict IMAGE --model ensemble.pt` or `fmnist-search evaluate "
        "--model ensemble.pt`; `fmnist-search export` writes it as one model.",
    ]


def _per_class_cell(m: ModelResult, i: int) -> str:
    assert m.summary is not None, "a model in the results is summarised"
    pc = m.summary.per_class_test_accuracy
    return fmt_ms(MeanStd(mean=pc.mean[i], std=pc.std[i], n=len(m.runs)))


def per_class(r: Results) -> list[str]:
    b = r.best
    rows = [
        [c, *[_per_class_cell(m, i) for m in r.models], fmt(b.per_class_test_accuracy[i])]
        for i, c in enumerate(r.classes)
    ]
    return [
        _heading(2, "Per-class test accuracy"),
        _table(["class", *[m.label for m in r.models], "best.pt"], rows),
        _figure(FIGURES["per_class"], "Per-class test accuracy (error bars: std over seeds)"),
        _figure(
            FIGURES["confusion"],
            f"Test confusion matrix of best.pt ({b.label}, seed {b.seed}), each row "
            "normalised to sum to 1",
        ),
    ]


def learning_curves(r: Results) -> list[str]:
    return [
        _heading(2, "Learning curves"),
        _figure(
            FIGURES["learning_curves"],
            "Re-training loss and accuracy per epoch, mean over seeds (band: min to max); "
            "dashed: training (running mean under augmentation), solid: validation",
        ),
    ]


def _objective(value: float, name: str) -> str:
    return f"{int(value):,}" if name == "params" else fmt(value, 3)


def the_search(r: Results) -> list[str]:
    st = r.study
    blocks = [
        _heading(2, "The search"),
        _figure(FIGURES["history"], "Validation loss of every finished trial, and the best so far"),
    ]
    if st.pareto is not None:
        on_front = sorted((p for p in st.pareto if p.on_front), key=lambda p: p.objective)
        unit = "parameters" if st.objectives[1] == "params" else "ms at batch 1"
        blocks += [
            _figure(
                FIGURES["pareto"],
                f"Validation accuracy against {unit}: every completed trial, the Pareto front "
                "(validation loss and the second objective, both minimised), the re-trained "
                "members' test accuracy, and the seed's models at their recorded validation "
                "accuracy",
            ),
            _table(
                ["trial", unit, "validation accuracy"],
                [
                    [str(p.number), _objective(p.objective, st.objectives[1]), fmt(p.val_accuracy)]
                    for p in on_front
                ],
            ),
        ]
    if not st.importances:
        return [*blocks, f"{st.importances_note}; no importance plot."]
    return [
        *blocks,
        _figure(FIGURES["importances"], "Hyperparameter importances (PED-ANOVA, Optuna)"),
        _table(["parameter", "importance"], [[k, fmt(v)] for k, v in st.importances.items()]),
        *([f"Caveat: the {st.importances_note}."] if st.importances_note else []),
    ]


def hyperparameters(r: Results) -> list[str]:
    blocks = [_heading(2, "Hyperparameters")]
    for m in r.models:
        seeds = ", ".join(str(run.seed) for run in m.runs)
        blocks += [
            _heading(3, f"{m.rank}. {m.label}"),
            f"search: validation loss {fmt(m.search.val_loss)}, validation accuracy "
            f"{fmt(m.search.val_accuracy)}; re-trained {epochs(m.epochs)} with seeds {seeds}",
            _table(["parameter", "value"], [[k, _value(v)] for k, v in m.params.items()]),
            _code(json.dumps(m.config, indent=1)),
        ]
    return blocks


def versions(r: Results) -> list[str]:
    return [_heading(2, "Versions"), _bullets(f"{k}: {v}" for k, v in r.versions.items())]


SECTIONS = (
    intro,
    notes,
    results_table,
    best_model,
    ensembles,
    per_class,
    learning_curves,
    the_search,
    hyperparameters,
    versions,
)


def document(r: Results) -> str:
    """report.md: every section, in order."""
    return _join(block for section in SECTIONS for block in section(r))


def dashboard_summary(r: Results) -> str:
    """The study note's copy of the report: a head paragraph, then the Results, Best model and
    Ensembles sections with their headings one level down."""
    se = r.settings
    which = _named(se.trials_requested) if se.trials_requested else f"the top {se.top} trials"
    head = (
        f"## Report of {r.created}\n\n`{r.command or GENERATOR}`: {which} of "
        f"`{r.study.name}` re-trained with {plural(se.seeds, 'seed')} each, then scored once on "
        "the test set. Its figures are the study's artifacts."
    )
    return (
        head
        + "\n\n"
        + _join([*results_table(r, level=3), *best_model(r, level=3), *ensembles(r, level=3)])
    )
