"""Architectures as data: one MLP and one CNN, each built from a frozen config.

The seed report's named models are presets of these configs, registered under their seed names.
Inputs are float tensors of shape [B, 1, 28, 28]; outputs are logits of shape [B, 10].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from search.data import NUM_CLASSES
from search.errors import InvalidConfig

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
# Non-decreasing activations commute with max pooling: pool(act(x)) == act(pool(x)), exactly,
# gradients included. Applying them after the pool computes them on a 4x smaller map.
_COMMUTES_WITH_MAX = frozenset({"relu", "tanh", "sigmoid", "none"})
REGULARIZERS = ("bn", "dropout", "none")
IMAGE_SIZE = 28


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (256, 128)  # units per hidden layer; () is a linear model
    activation: str = "relu"  # a key of ACTIVATIONS, applied after every hidden layer
    dropout: float = 0.0  # dropout probability after every hidden activation
    batch_norm: bool = False  # BatchNorm1d after every hidden Linear
    kind: str = field(default="mlp", init=False)


@dataclass(frozen=True)
class ConvBlock:
    channels: int  # output channels of the Conv2d
    kernel: int = 3  # square kernel; padding is (kernel - 1) // 2, stride 1
    pool_kernel: int = 2  # square pooling window, stride 2
    pool_pad: bool = False  # pad the pool by pool_kernel // 2 (the seed's first block does)
    convs: int = 1  # convolutions before the pool: 1 (the seed's blocks) or 2 (VGG/ResNet-style)
    residual: bool = False  # add a shortcut around the convolutions (1x1 conv if widths differ)

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2

    @property
    def pool_padding(self) -> int:
        return self.pool_kernel // 2 if self.pool_pad else 0

    def conv_side(self, side: int) -> int:
        """The side of a ``side`` x ``side`` map after this block's convolutions (< 1: none)."""
        return side + self.convs * (2 * self.padding - self.kernel + 1)

    def out_side(self, side: int) -> int:
        """The side after the whole block (convolutions, then pool); 0 if nothing is left."""
        side = self.conv_side(side)
        if side < 1 or side + 2 * self.pool_padding < self.pool_kernel:
            return 0
        return (side + 2 * self.pool_padding - self.pool_kernel) // 2 + 1


@dataclass(frozen=True)
class CNNConfig:
    blocks: tuple[ConvBlock, ...] = (ConvBlock(32), ConvBlock(64))
    pool: str = "max"  # "avg" or "max", every block
    regularizer: str = "bn"  # after each block's pool: "bn" (BatchNorm2d), "dropout", "none"
    conv_dropout: float = 0.2  # Dropout2d probability when regularizer == "dropout"
    fc_hidden: tuple[int, ...] = (128,)  # hidden Linear widths between flatten and the logits
    fc_dropout: float = 0.0  # dropout before every hidden Linear
    activation: str = "relu"  # after every conv and hidden Linear
    head: str = "flatten"  # "flatten" the last map, or "gap": global average pool per channel
    kind: str = field(default="cnn", init=False)

    def feature_shapes(self) -> list[tuple[int, int]]:
        """(channels, side) after each block; raises InvalidConfig if a map shrinks below 1."""
        side, shapes = IMAGE_SIZE, []
        for i, b in enumerate(self.blocks):
            if b.convs not in (1, 2):
                raise InvalidConfig(f"conv block {i} has {b.convs} convolutions: use 1 or 2")
            if b.residual and b.kernel % 2 == 0:
                raise InvalidConfig(
                    f"conv block {i}: a residual shortcut needs an odd kernel (3 or 5), "
                    f"not {b.kernel}, to keep the map's size"
                )
            side = b.out_side(side)
            if side < 1:
                raise InvalidConfig(f"conv block {i} shrinks the feature map below 1x1")
            shapes.append((b.channels, side))
        return shapes

    @property
    def flat_features(self) -> int:
        channels, side = self.feature_shapes()[-1] if self.blocks else (1, IMAGE_SIZE)
        return channels if self.head == "gap" else channels * side * side


ModelConfig = MLPConfig | CNNConfig


def _check_common(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise InvalidConfig(
            f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}"
        )


def build_mlp(cfg: MLPConfig) -> nn.Sequential:
    _check_common(cfg.activation)
    layers: list[nn.Module] = [nn.Flatten()]
    width = IMAGE_SIZE * IMAGE_SIZE
    for units in cfg.hidden:
        layers.append(nn.Linear(width, units))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = units
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


HEADS = ("flatten", "gap")


class ConvUnit(nn.Module):
    """The convolutions of a block with ``convs`` > 1 or a ``residual`` shortcut:
    conv -> [BN] -> act (-> conv -> [BN]), plus the shortcut (identity, or a 1x1 conv where the
    width changes), then act. Shapes: [N, c_in, s, s] -> [N, block.channels, s', s'] with
    s' = s for odd kernels."""

    def __init__(self, c_in: int, block: ConvBlock, activation: str, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = c_in
        for i in range(block.convs):
            layers.append(nn.Conv2d(width, block.channels, block.kernel, padding=block.padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(block.channels))
            if i < block.convs - 1 or not block.residual:
                layers.append(ACTIVATIONS[activation]())
            width = block.channels
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module | None = None
        if block.residual:
            self.shortcut = (
                nn.Identity() if c_in == block.channels else nn.Conv2d(c_in, block.channels, 1)
            )
            self.out_act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.shortcut is None:
            return y
        return self.out_act(y + self.shortcut(x))


def build_cnn(cfg: CNNConfig, pool_first: bool = True) -> nn.Sequential:
    """The CNN of ``cfg``; ``pool_first=False`` keeps the textbook order conv -> activation ->
    pool in every block (the same function; for tests and benchmarks)."""
    _check_common(cfg.activation)
    if cfg.pool not in POOLS:
        raise InvalidConfig(f"unknown pool {cfg.pool!r}: use avg or max")
    if cfg.regularizer not in REGULARIZERS:
        raise InvalidConfig(f"unknown regularizer {cfg.regularizer!r}: use bn, dropout or none")
    if cfg.head not in HEADS:
        raise InvalidConfig(f"unknown head {cfg.head!r}: use {' or '.join(HEADS)}")
    cfg.feature_shapes()
    layers: list[nn.Module] = []
    channels = 1
    pool_first = pool_first and cfg.pool == "max" and cfg.activation in _COMMUTES_WITH_MAX
    for b in cfg.blocks:
        act = ACTIVATIONS[cfg.activation]()
        pool = POOLS[cfg.pool](b.pool_kernel, stride=2, padding=b.pool_padding)
        if b.convs > 1 or b.residual:
            # A modern block: its batch norm sits inside, after each convolution.
            layers += [ConvUnit(channels, b, cfg.activation, cfg.regularizer == "bn"), pool]
            if cfg.regularizer == "dropout":
                layers.append(nn.Dropout2d(cfg.conv_dropout))
            channels = b.channels
            continue
        conv = nn.Conv2d(channels, b.channels, b.kernel, stride=1, padding=b.padding)
        # conv -> activation -> pool, computed as conv -> pool -> activation where equal.
        # Parameter names (layer indices) are the same either way.
        layers += [conv, pool, act] if pool_first else [conv, act, pool]
        if cfg.regularizer == "bn":
            layers.append(nn.BatchNorm2d(b.channels))
        elif cfg.regularizer == "dropout":
            layers.append(nn.Dropout2d(cfg.conv_dropout))
        channels = b.channels
    if cfg.head == "gap":
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers.append(nn.Flatten())
    width = cfg.flat_features
    for units in cfg.fc_hidden:
        if cfg.fc_dropout > 0:
            layers.append(nn.Dropout(cfg.fc_dropout))
        layers += [nn.Linear(width, units), ACTIVATIONS[cfg.activation]()]
        width = units
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def build_model(cfg: ModelConfig) -> nn.Module:
    return build_mlp(cfg) if isinstance(cfg, MLPConfig) else build_cnn(cfg)


class FlipAveraged(nn.Module):
    """Test-time augmentation: ``model``'s class probabilities for each image and for its
    mirror image (flipped left to right), averaged; returned as log-probabilities, which serve
    as logits (softmax gives back the averaged probabilities, cross-entropy their log).

    For models that trained with random horizontal flips (report --tta flip)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_probabilities([self.model(x), self.model(x.flip(-1))])


class Averaged(nn.Module):
    """An ensemble: its members' class probabilities averaged, returned as log-probabilities
    like ``FlipAveraged`` (members may be FlipAveraged themselves). ``report`` writes one of the
    runs it re-trained as ensemble.pt; one forward pass of each member per image."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return average_probabilities([m(x) for m in self.members])


def average_probabilities(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of the class probabilities that ``outputs`` (logits or
    log-probabilities, [N, 10] each) give; in log space: no underflow for confident models."""
    logp = torch.stack([torch.log_softmax(o.float(), dim=1) for o in outputs])
    return torch.logsumexp(logp, dim=0) - math.log(len(outputs))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model: nn.Module) -> int:
    """Multiply-adds of one 28x28 image through the model's convolutions and linear layers (the
    cost of a forward pass, up to activations, pooling and normalisation)."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * module.in_channels // module.groups * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    return asdict(cfg)


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    d = dict(d)
    kind = d.pop("kind", None)
    if kind == "mlp":
        return MLPConfig(**{**d, "hidden": tuple(d.get("hidden", ()))})
    if kind == "cnn":
        blocks = tuple(ConvBlock(**b) for b in d.pop("blocks", ()))
        return CNNConfig(**{**d, "blocks": blocks, "fc_hidden": tuple(d.get("fc_hidden", ()))})
    raise InvalidConfig(f"unknown model kind {kind!r}: expected mlp or cnn")


# --- the seed's models, registered under their seed names -------------------------------------

PRESETS: dict[str, ModelConfig] = {}


def register_preset(name: str, cfg: ModelConfig) -> ModelConfig:
    if name in PRESETS:
        raise ValueError(f"preset {name} registered twice")
    PRESETS[name] = cfg
    return cfg


def list_presets(kind: str | None = None) -> list[str]:
    return [n for n, c in PRESETS.items() if kind is None or c.kind == kind]


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise InvalidConfig(f"unknown preset {name!r}: `fmnist-search presets` lists them")
    return PRESETS[name]


def _seed_mlps() -> None:
    for hidden in ((50,), (128,)):
        for act in ("relu", "tanh", "sigmoid", "none"):
            register_preset(f"1L_{hidden[0]}H_{act}", MLPConfig(hidden=hidden, activation=act))
    for act in ("relu", "tanh"):
        register_preset(f"2L_256H_128H_{act}", MLPConfig(hidden=(256, 128), activation=act))
        register_preset(f"3L_256H_128H_64H_{act}", MLPConfig(hidden=(256, 128, 64), activation=act))
    register_preset("4L_512H_256H_128H_64H_relu", MLPConfig(hidden=(512, 256, 128, 64)))
    register_preset("5L_512H_256H_128H_64H_32H_relu", MLPConfig(hidden=(512, 256, 128, 64, 32)))


# The seed's conv blocks: Conv(k5, p2) + Pool(k4, s2, p2); Conv(k4, p1) + Pool(k4, s2); Conv(k4,
# p1) + Pool(k3, s2). With our padding rule (kernel - 1) // 2 these are exactly the seed's layers.
SEED_BLOCKS = (
    ConvBlock(8, kernel=5, pool_kernel=4, pool_pad=True),
    ConvBlock(12, kernel=4, pool_kernel=4),
    ConvBlock(16, kernel=4, pool_kernel=3),
)


def _seed_cnns() -> None:
    for pool in ("AVG", "MAX"):
        p = pool.lower()
        register_preset(
            f"Conv_1L_8_1L_128_{pool}",
            CNNConfig(blocks=SEED_BLOCKS[:1], pool=p, regularizer="none", fc_hidden=(128,)),
        )
        for reg, name in (("bn", "BN"), ("dropout", "DO")):
            register_preset(
                f"Conv_2L_8_12_2L_128_32_{pool}_{name}",
                CNNConfig(blocks=SEED_BLOCKS[:2], pool=p, regularizer=reg, fc_hidden=(128, 32)),
            )
        register_preset(
            f"Conv_3L_8_12_16_3L_128_64_32_{pool}_BN",
            CNNConfig(blocks=SEED_BLOCKS, pool=p, regularizer="bn", fc_hidden=(128, 64, 32)),
        )


_seed_mlps()
_seed_cnns()


def forward_shape(cfg: ModelConfig, batch: int = 2) -> tuple[int, ...]:
    """Shape of the logits for a batch of zeros; used by tests and `presets`."""
    model = build_model(cfg).eval()
    with torch.no_grad():
        return tuple(model(torch.zeros(batch, 1, IMAGE_SIZE, IMAGE_SIZE)).shape)
