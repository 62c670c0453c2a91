from __future__ import annotations

import pytest
import torch

from search.errors import InvalidConfig
from search.models import (
    PRESETS,
    CNNConfig,
    ConvBlock,
    MLPConfig,
    build_cnn,
    build_model,
    config_from_dict,
    config_to_dict,
    count_parameters,
    forward_shape,
    get_preset,
)


def fc_params(inputs: int, hidden: list[int]) -> int:
    sizes = [inputs, *hidden, 10]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))


# Parameter counts derived by hand from the seed's layer list (MODELS.md), independently of the
# builder: conv weights + biases, BatchNorm2d scale + shift, then the Linear layers.
CONV1 = 1 * 8 * 25 + 8  # Conv(1->8, k5)
CONV2 = 8 * 12 * 16 + 12  # Conv(8->12, k4)
CONV3 = 12 * 16 * 16 + 16  # Conv(12->16, k4)
EXPECTED_CNN = {  # name without the pool -> parameters
    "Conv_1L_8_1L_128": CONV1 + fc_params(1800, [128]),
    "Conv_2L_8_12_2L_128_32_BN": CONV1 + CONV2 + 2 * (8 + 12) + fc_params(432, [128, 32]),
    "Conv_2L_8_12_2L_128_32_DO": CONV1 + CONV2 + fc_params(432, [128, 32]),
    "Conv_3L_8_12_16_3L_128_64_32_BN": CONV1
    + CONV2
    + CONV3
    + 2 * (8 + 12 + 16)
    + fc_params(64, [128, 64, 32]),
}


def expected(name: str, cfg) -> int:
    if isinstance(cfg, MLPConfig):
        return fc_params(784, list(cfg.hidden))
    return EXPECTED_CNN[name.replace("_AVG", "").replace("_MAX", "")]


def test_all_seed_models_are_registered():
    mlps = [n for n in PRESETS if PRESETS[n].kind == "mlp"]
    cnns = [n for n in PRESETS if PRESETS[n].kind == "cnn"]
    assert len(mlps) == 8 + 4 + 2 and len(cnns) == 8


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_output_shape_and_parameter_count(name):
    cfg = PRESETS[name]
    assert forward_shape(cfg, batch=3) == (3, 10)
    assert count_parameters(build_model(cfg)) == expected(name, cfg)


@pytest.mark.parametrize(
    "name,flat",
    [
        ("Conv_1L_8_1L_128_MAX", 1800),
        ("Conv_2L_8_12_2L_128_32_AVG_BN", 432),
        ("Conv_3L_8_12_16_3L_128_64_32_MAX_BN", 64),
    ],
)
def test_seed_cnns_flatten_to_the_seed_feature_counts(name, flat):
    cfg = get_preset(name)
    assert cfg.flat_features == flat
    model = build_model(cfg).eval()
    flatten = next(i for i, m in enumerate(model) if isinstance(m, torch.nn.Flatten))
    with torch.no_grad():
        assert model[: flatten + 1](torch.zeros(1, 1, 28, 28)).shape == (1, flat)


def test_seed_cnn_layers_match_the_report():
    model = build_model(get_preset("Conv_2L_8_12_2L_128_32_AVG_DO"))
    kinds = [type(m).__name__ for m in model]
    assert kinds[:8] == ["Conv2d", "ReLU", "AvgPool2d", "Dropout2d"] * 2
    conv1, pool1 = model[0], model[2]
    assert (conv1.kernel_size, conv1.padding) == ((5, 5), (2, 2))
    assert (pool1.kernel_size, pool1.stride, pool1.padding) == (4, 2, 2)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trips_through_a_dict(name):
    cfg = PRESETS[name]
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_a_geometry_that_collapses_is_refused():
    cfg = CNNConfig(blocks=tuple(ConvBlock(8, kernel=4, pool_kernel=4) for _ in range(4)))
    with pytest.raises(InvalidConfig, match="below 1x1"):
        build_model(cfg)


def test_unknown_activation_is_refused():
    with pytest.raises(InvalidConfig, match="unknown activation"):
        build_model(MLPConfig(activation="swishy"))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "none"])
def test_max_pool_before_a_monotonic_activation_computes_the_same_model(activation):
    cfg = CNNConfig(
        blocks=(ConvBlock(8, 5, pool_kernel=4, pool_pad=True), ConvBlock(12, 3, pool_kernel=3)),
        pool="max",
        activation=activation,
    )
    torch.manual_seed(0)
    model = build_model(cfg).double()  # float64: any difference beyond rounding would show
    kinds = [type(m).__name__ for m in model]
    assert kinds.index("MaxPool2d") == 1  # pooled first: the activation sees a 4x smaller map
    reference = build_cnn(cfg, pool_first=False).double()
    reference.load_state_dict(model.state_dict())  # same parameter names: only order differs
    assert [type(m).__name__ for m in reference].index("MaxPool2d") == 2
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outputs, grads = [], []
    for m in (model, reference):
        m.zero_grad()
        out = m(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in m.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_non_monotonic_activations_keep_the_textbook_order(activation):
    model = build_model(CNNConfig(pool="max", activation=activation))
    act = {"gelu": "GELU", "silu": "SiLU"}[activation]
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", act, "MaxPool2d"]
