"""Figures we did not measure: the seed report's recorded results and published ones."""

from __future__ import annotations

from search.errors import UserError
from search.models import build_model, count_parameters, get_preset
from search.report.results import ParetoReference, ReferenceRow

# Recorded in the seed report (manual search, plain SGD, 50k/10k stratified split, random_state=42)
# and published elsewhere; copied from shared/seed/MODELS.md. Shown as reference rows only.
# (model, train accuracy, validation accuracy, test accuracy, test loss); None = not recorded.
SEED_RESULTS: tuple[tuple[str, float | None, float | None, float | None, float | None], ...] = (
    ("1L_50H_* (all activations, about)", None, 0.85, None, None),
    ("4L_512H_256H_128H_64H_relu", 0.89, 0.87, None, None),
    ("5L_512H_256H_128H_64H_32H_relu", 0.91, 0.88, 0.8739, 0.3543),
    ("Conv_1L_8_1L_128_AVG", 0.86, 0.86, None, None),
    ("Conv_1L_8_1L_128_MAX", 0.89, 0.89, None, None),
    ("Conv_2L_8_12_2L_128_32_AVG_BN", 0.94, 0.91, 0.9062, 0.2686),
    ("Conv_2L_8_12_2L_128_32_AVG_DO", 0.82, 0.81, None, None),
    ("Conv_2L_8_12_2L_128_32_MAX_BN", 0.94, 0.89, None, None),
    ("Conv_2L_8_12_2L_128_32_MAX_DO", 0.88, 0.87, None, None),
    ("Conv_3L_8_12_16_3L_128_64_32_AVG_BN", 0.92, 0.89, None, None),
    ("Conv_3L_8_12_16_3L_128_64_32_MAX_BN", 0.93, 0.88, None, None),
)
# (what, test accuracy, parameters as published or None)
PUBLISHED: tuple[tuple[str, float, str | None], ...] = (
    ("Human performance", 0.835, None),
    ("SVC, best scikit-learn classifier in the dataset authors' benchmark (about)", 0.897, None),
    ("MLP 256-128-100, no preprocessing", 0.883, None),
    ("Two-conv CNN, no augmentation, 30 epochs", 0.925, "about 83k"),
    ("Small CNNs with crop/flip and random erasing", 0.947, "about 300k"),
    ("Wide ResNets with crop/flip and random erasing (about)", 0.963, None),
    ("Best reported overall (about)", 0.969, None),
)


def _preset_params(name: str) -> int | None:
    """Parameter counts are facts of the architecture: count them from our presets."""
    try:
        return count_parameters(build_model(get_preset(name)))
    except UserError:  # no preset of that name (e.g. a family of models)
        return None


def reference_rows() -> list[ReferenceRow]:
    """The seed's recorded results and published figures (not measured here)."""
    rows = [
        ReferenceRow(
            model=name,
            source="seed report",
            train_accuracy=train_acc,
            val_accuracy=val_acc,
            test_accuracy=test_acc,
            test_loss=test_loss,
            n_params=_preset_params(name),
        )
        for name, train_acc, val_acc, test_acc, test_loss in SEED_RESULTS
    ]
    rows += [
        ReferenceRow(
            model=name,
            source="published",
            train_accuracy=None,
            val_accuracy=None,
            test_accuracy=test_acc,
            test_loss=None,
            n_params=n_params,
        )
        for name, test_acc, n_params in PUBLISHED
    ]
    return rows


def pareto_references(objective: str, kind: str | None) -> list[ParetoReference]:
    """The seed's models of this ``kind`` (mlp or cnn; None: all) as points of a two-objective
    plot: their recorded validation accuracy against their parameter count (counted) or their
    latency at batch 1 (measured now, on this machine's CPU, as the study's latencies were)."""
    from search import latency

    points = []
    for name, _, val_acc, _, _ in SEED_RESULTS:
        if val_acc is None or _preset_params(name) is None:
            continue
        if kind is not None and get_preset(name).kind != kind:
            continue
        if objective == "params":
            value = float(_preset_params(name) or 0)
        else:
            value = latency.measure(build_model(get_preset(name)), "cpu").batch1_ms
        points.append(ParetoReference(model=name, objective=value, val_accuracy=val_acc))
    return points
