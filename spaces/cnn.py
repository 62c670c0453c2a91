"""CNNs: 1-4 blocks of 1-2 convs (+ shortcut), pooling, regularisation, head, FC, recipe.

Block i's parameters are ``conv{i}_channels``, ``conv{i}_kernel``, ``conv{i}_convs`` (3x3
blocks up to ``MAX_DOUBLE`` channels), ``conv{i}_residual`` (odd kernels), ``pool{i}_kernel``
and ``pool{i}_pad``; ``regularizer`` (batch norm, dropout or none) is a choice for one or two
blocks, batch norm for more; ``head`` (flatten or global average pooling) a choice for three or
four blocks, flatten for fewer; FC layer i's is ``fc{i}_units``. Every draw is a valid
geometry (see GEOMETRY below): ``pool{i}_pad`` is drawn only where an unpadded pool fits the map,
``conv{i}_kernel`` only where the map is larger than 1x1.
"""

from __future__ import annotations

from typing import Any

import optuna

from search.models import IMAGE_SIZE, REGULARIZERS, CNNConfig, ConvBlock, get_preset
from search.training import SEED_RECIPE, RunConfig, TrainConfig
from spaces._recipe import recipe_params, suggest_recipe

KIND = "cnn"
MAX_FC = 3
# Channels may double from block to block as the map halves (32, 64, 128, 128), the usual
# rule that keeps every block's cost about equal. Without it the search's winners were 14x14
# blocks of 100+ channels on 5x5 kernels that trained twice as long as a VGG-style CNN of the
# same validation accuracy (31 s vs 15 s an epoch on 2 cores), and a report re-trains each
# winner nine times.
MAX_CHANNELS = (32, 64, 128, 128)
# A block may have two 3x3 convolutions (as VGG and ResNet blocks do) up to these widths: the
# second convolution costs side^2 x channels^2 x 9 multiply-adds per image, so at the single-conv
# caps three double blocks would cost 29M, 4x the VGG-style warm start (7.5M). Under these caps
# a double block costs no more than a single 5x5 block of the same position at its cap, so the
# space's most expensive model (4 single 5x5 blocks at the caps, 24M) stays the bound.
MAX_DOUBLE = (16, 48, 96, 96)
# The rules below come from the error distribution of random draws of the space
# (benchmarks/space_edf.py, 32 draws trained 2 epochs each: benchmarks/results/space_edf_cnn_*.csv).
# Before them a random draw reached 0.60 validation accuracy on average and 6 of 32 stayed at
# chance; a search that affords a few dozen trials trains little but such draws. Every rule keeps
# the seed's presets and the warm starts as points of the space.
# - Later blocks start wider: a last block of 8-16 channels (a 2x2 or 4x4 map) was a bottleneck.
MIN_CHANNELS = (8, 12, 16, 32)
# - Three or four blocks always use batch norm: of 17 such draws, the 9 without it averaged 0.45
#   (four at chance), the 8 with it 0.73. The seed's three-block presets all have it.
BN_FROM_BLOCKS = 3
# - Global average pooling only after three or four blocks: after one or two it averages a 7x7
#   or 14x14 map of at most 64 channels into as many numbers (eight such draws, 0.15-0.70).
GAP_FROM_BLOCKS = 3
# - Plain SGD from lr 0.05 (the seed's): its four draws below 0.07 reached 0.10-0.31; and
#   weight decay up to 1e-3 (the warm starts use 1e-4 and 5e-4), as draws with more learned
#   slowest (0.45 mean above 3.5e-4).
LR_RANGES = {"sgd": (0.05, 0.5)}
WEIGHT_DECAY = (1e-6, 1e-3)
MIN_FC_UNITS = 32  # the seed's narrowest hidden layer; 16-19 unit layers were bottlenecks
# `report` re-trains the finalists for 2x their search budget (30 epochs at the default 15) where
# that fits its --longer-within minutes:
# benchmarks/final_epochs.py measured +0.0072 test accuracy for the VGG-style warm start at 30
# epochs over 15 (0.9341 +- 0.0002 vs 0.9269 +- 0.0004, 3 seeds).
REPORT_EPOCHS_FACTOR = 2
# GEOMETRY: 4x4 kernels and unpadded 4x4 pools shrink the map fastest; before this rule 151
# of 3,000 random draws (benchmarks/results/space_costs_cnn.txt) shrank it below 1x1 and
# failed, and a failed trial teaches TPE nothing, so it kept drawing them (11 of 101 trials in
# an hour's default study). Now where an unpadded pool window is larger than the map, the pool
# is padded (``pool{i}_pad`` is not drawn), and a block on a 1x1 map has a 3x3 convolution
# (only its centre tap sees the map; ``conv{i}_kernel`` is not drawn). Draws that were valid
# are unchanged.
KERNELS = (3, 4, 5)


def _kernel_drawn(side: int) -> bool:
    """Is conv{i}_kernel drawn for a block on a side x side map (else 3)?"""
    return side > 1


def _pad_drawn(side: int, kernel: int, pool_kernel: int) -> bool:
    """Is pool{i}_pad drawn (else padded): does an unpadded pool fit the map after the conv?
    Only 4x4 kernels shrink the map (by one), and they have one convolution."""
    return ConvBlock(1, kernel).conv_side(side) >= pool_kernel


def _block(trial: optuna.Trial, i: int, side: int) -> ConvBlock:
    channels = trial.suggest_int(f"conv{i}_channels", MIN_CHANNELS[i], MAX_CHANNELS[i], log=True)
    kernel = trial.suggest_categorical(f"conv{i}_kernel", KERNELS) if _kernel_drawn(side) else 3
    convs = 1
    if kernel == 3 and channels <= MAX_DOUBLE[i]:
        convs = trial.suggest_categorical(f"conv{i}_convs", (1, 2))
    # A shortcut keeps the map's size only with an odd kernel ("same" padding).
    residual = kernel % 2 == 1 and trial.suggest_categorical(f"conv{i}_residual", (False, True))
    pool_kernel = trial.suggest_categorical(f"pool{i}_kernel", (2, 3, 4))
    pool_pad = True
    if _pad_drawn(side, kernel, pool_kernel):
        pool_pad = trial.suggest_categorical(f"pool{i}_pad", (False, True))
    return ConvBlock(
        channels=channels,
        kernel=kernel,
        pool_kernel=pool_kernel,
        pool_pad=pool_pad,
        convs=convs,
        residual=residual,
    )


def space(trial: optuna.Trial) -> RunConfig:
    n_blocks = trial.suggest_int("n_blocks", 1, len(MAX_CHANNELS))
    blocks: list[ConvBlock] = []
    side = IMAGE_SIZE
    for i in range(n_blocks):
        blocks.append(_block(trial, i, side))
        side = blocks[-1].out_side(side)
    regularizer = "bn"
    if n_blocks < BN_FROM_BLOCKS:
        regularizer = trial.suggest_categorical("regularizer", REGULARIZERS)
    conv_dropout = 0.2
    if regularizer == "dropout":
        conv_dropout = trial.suggest_float("conv_dropout", 0.05, 0.5)
    n_fc = trial.suggest_int("n_fc", 0, MAX_FC)
    model = CNNConfig(
        blocks=tuple(blocks),
        pool=trial.suggest_categorical("pool", ("avg", "max")),
        regularizer=regularizer,
        conv_dropout=conv_dropout,
        fc_hidden=tuple(
            trial.suggest_int(f"fc{i}_units", MIN_FC_UNITS, 512, log=True) for i in range(n_fc)
        ),
        fc_dropout=trial.suggest_float("fc_dropout", 0.0, 0.5),
        activation=trial.suggest_categorical("activation", ("relu", "gelu", "silu")),
        head=(
            trial.suggest_categorical("head", ("flatten", "gap"))
            if n_blocks >= GAP_FROM_BLOCKS
            else "flatten"
        ),
    )
    recipe = suggest_recipe(trial, augment=True, lr_ranges=LR_RANGES, weight_decay=WEIGHT_DECAY)
    return RunConfig(model=model, train=recipe)


def to_params(config: RunConfig) -> dict[str, Any]:
    m = config.model
    assert isinstance(m, CNNConfig)
    params: dict[str, Any] = {
        "n_blocks": len(m.blocks),
        "n_fc": len(m.fc_hidden),
        "pool": m.pool,
        "fc_dropout": m.fc_dropout,
        "activation": m.activation,
    }
    if len(m.blocks) < BN_FROM_BLOCKS:
        params["regularizer"] = m.regularizer
    if len(m.blocks) >= GAP_FROM_BLOCKS:
        params["head"] = m.head
    side = IMAGE_SIZE
    for i, b in enumerate(m.blocks):
        params |= {f"conv{i}_channels": b.channels, f"pool{i}_kernel": b.pool_kernel}
        if _kernel_drawn(side):
            params[f"conv{i}_kernel"] = b.kernel
        if _pad_drawn(side, b.kernel, b.pool_kernel):
            params[f"pool{i}_pad"] = b.pool_pad
        side = b.out_side(side)
        if b.kernel == 3 and b.channels <= MAX_DOUBLE[i]:
            params[f"conv{i}_convs"] = b.convs
        if b.kernel % 2 == 1:
            params[f"conv{i}_residual"] = b.residual
    if m.regularizer == "dropout":
        params["conv_dropout"] = m.conv_dropout
    params |= {f"fc{i}_units": u for i, u in enumerate(m.fc_hidden)}
    return params | recipe_params(config.train, augment=True)


_SEED_BEST = get_preset("Conv_2L_8_12_2L_128_32_AVG_BN")
WARM_START = {
    # The seed's best CNN (test accuracy 0.9062) with the seed's recipe, then a modern recipe,
    # then a common small VGG-style CNN (not from the seed: 3x3 convs doubling 32-64-128, max
    # pooling, batch norm, dropout before one hidden layer) with the modern recipe. Starting
    # TPE from a strong point of the space costs one trial and keeps it from spending its first
    # hour on ~50k-parameter models (what it converged on without it).
    "Conv_2L_8_12_2L_128_32_AVG_BN/seed-recipe": RunConfig(_SEED_BEST, SEED_RECIPE),
    "Conv_2L_8_12_2L_128_32_AVG_BN/adamw-augment": RunConfig(
        _SEED_BEST,
        TrainConfig(
            optimizer="adamw",
            lr=2e-3,
            weight_decay=1e-4,
            batch_size=128,
            schedule="cosine",
            label_smoothing=0.1,
            crop_pad=2,
            flip=True,
        ),
    ),
    "VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment": RunConfig(
        CNNConfig(
            blocks=(ConvBlock(32, 3), ConvBlock(64, 3), ConvBlock(128, 3)),
            pool="max",
            regularizer="bn",
            fc_hidden=(128,),
            fc_dropout=0.3,
        ),
        TrainConfig(
            optimizer="adamw",
            lr=2e-3,
            weight_decay=5e-4,
            batch_size=128,
            schedule="cosine",
            crop_pad=2,
            flip=True,
        ),
    ),
}
