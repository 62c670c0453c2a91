from __future__ import annotations

import pytest
import torch

from search.errors import InvalidConfig
from search.models import (
    PRESETS,
    CNNConfig,
    ConvBlock,
    ConvUnit,
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


# --- blocks of two convolutions, residual shortcuts, the global-average-pooling head ---------


def _cnn(*blocks: ConvBlock, head: str = "flatten", regularizer: str = "bn") -> CNNConfig:
    return CNNConfig(blocks=blocks, fc_hidden=(), head=head, regularizer=regularizer)


@pytest.mark.parametrize("convs", [1, 2])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("channels", [1, 16])  # identity shortcut (1 -> 1) or a 1x1 conv
def test_modern_blocks_keep_the_map_size_before_the_pool(convs, residual, channels):
    cfg = _cnn(ConvBlock(channels, kernel=3, convs=convs, residual=residual))
    assert cfg.feature_shapes() == [(channels, 14)]
    model = build_cnn(cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    convs_built = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    shortcut_conv = residual and channels != 1
    assert len(convs_built) == convs + shortcut_conv
    # Batch norm sits after each convolution of a modern block.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (convs if (convs > 1 or residual) else 1)


def test_a_residual_block_adds_its_input_back():
    block = ConvBlock(4, kernel=3, convs=1, residual=True)
    unit = ConvUnit(4, block, "relu", batch_norm=False)
    with torch.no_grad():
        for p in unit.body.parameters():
            p.zero_()  # the body outputs zeros: what is left is relu(shortcut(x)) = relu(x)
        x = torch.randn(2, 4, 8, 8)
        assert torch.equal(unit(x), torch.relu(x))
    assert isinstance(unit.shortcut, torch.nn.Identity)


def test_a_residual_shortcut_needs_an_odd_kernel():
    with pytest.raises(InvalidConfig, match="residual shortcut needs an odd kernel"):
        build_cnn(_cnn(ConvBlock(8, kernel=4, residual=True)))


def test_a_block_has_one_or_two_convolutions():
    with pytest.raises(InvalidConfig, match="has 3 convolutions: use 1 or 2"):
        build_cnn(_cnn(ConvBlock(8, convs=3)))


def test_the_gap_head_feeds_one_feature_per_channel():
    blocks = (ConvBlock(8, kernel=5), ConvBlock(24, kernel=3))
    flat, gap = _cnn(*blocks), _cnn(*blocks, head="gap")
    assert flat.flat_features == 24 * 7 * 7 and gap.flat_features == 24
    model = build_cnn(gap).eval()
    assert model[-1].in_features == 24
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(InvalidConfig, match="unknown head 'mean'"):
        build_cnn(_cnn(*blocks, head="mean"))


def test_configs_with_the_new_fields_round_trip_and_old_dicts_still_load():
    cfg = _cnn(ConvBlock(16, convs=2, residual=True), ConvBlock(32), head="gap")
    assert config_from_dict(config_to_dict(cfg)) == cfg
    old = config_to_dict(get_preset("Conv_2L_8_12_2L_128_32_AVG_BN"))
    for block in old["blocks"]:
        block.pop("convs"), block.pop("residual")
    old.pop("head")
    assert config_from_dict(old) == get_preset("Conv_2L_8_12_2L_128_32_AVG_BN")


def test_a_convolution_that_empties_the_map_is_refused_even_if_padded_pooling_follows():
    # 28 -> 14 -> 7 -> 3 -> 1 then a 4x4 kernel with padding 1 leaves no pixel; a padded pool
    # would make one again, and PyTorch would fail in the forward pass.
    blocks = (*[ConvBlock(8)] * 4, ConvBlock(8, kernel=4, pool_pad=True))
    with pytest.raises(InvalidConfig, match="conv block 4 shrinks the feature map below 1x1"):
        build_cnn(CNNConfig(blocks=blocks, fc_hidden=()))


def test_multiply_adds_counts_convolutions_and_linear_layers():
    from search.models import multiply_adds

    model = build_model(CNNConfig(blocks=(ConvBlock(4, kernel=3),), fc_hidden=()))
    # conv: 4 x 28 x 28 outputs of 1 x 3 x 3 each; then 4 x 14 x 14 features -> 10 logits
    assert multiply_adds(model) == 4 * 28 * 28 * 9 + 4 * 14 * 14 * 10
    assert model.training  # counted in eval mode, handed back as it was
