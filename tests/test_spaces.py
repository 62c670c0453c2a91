from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from search.errors import UsageError
from search.models import PRESETS, build_model, multiply_adds
from search.registry import PRUNERS, SAMPLERS, get_space, list_spaces, make_pruner, make_sampler
from search.registry import start_prior as registry_start_prior
from search.training import SEED_RECIPE, RunConfig

SPACES = list_spaces()


def test_the_two_spaces_are_found():
    assert {"mlp", "cnn"} <= set(SPACES)


@pytest.mark.parametrize("name", SPACES)
def test_sampled_configs_build_models_that_run_forward(name):
    space = get_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    built = 0
    for _ in range(60):
        trial = study.ask()
        cfg = space.space(trial)  # every draw is a valid model: no InvalidConfig
        model = build_model(cfg.model).eval()
        assert cfg.model.kind == space.KIND
        cfg.train.validate()
        with torch.no_grad():
            assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        built += 1
        study.tell(trial, 0.0)
    assert built == 60


# A value outside a parameter's range is only a warning for Optuna's FixedTrial: here it fails.
IN_RANGE = pytest.mark.filterwarnings("error:The value .* is out of the range:UserWarning")


@IN_RANGE
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_seed_preset_is_a_point_of_its_space(name):
    cfg = RunConfig(PRESETS[name], SEED_RECIPE)
    space = get_space(PRESETS[name].kind)
    params = space.to_params(cfg)
    assert space.space(optuna.trial.FixedTrial(params)) == cfg


@IN_RANGE
@pytest.mark.parametrize("name", SPACES)
def test_warm_start_points_round_trip(name):
    space = get_space(name)
    assert space.WARM_START
    for cfg in space.WARM_START.values():
        assert space.space(optuna.trial.FixedTrial(space.to_params(cfg))) == cfg


@IN_RANGE
def test_seed_cnn_points_stay_in_the_space_but_out_of_the_warm_start():
    from spaces import cnn

    assert set(cnn.SEED_POINTS).isdisjoint(cnn.WARM_START)
    assert list(cnn.WARM_START) == ["VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment"]
    for cfg in cnn.SEED_POINTS.values():
        assert cnn.space(optuna.trial.FixedTrial(cnn.to_params(cfg))) == cfg


def test_parameter_names_are_stable_and_indexed():
    trial = optuna.trial.FixedTrial(
        get_space("cnn").to_params(
            RunConfig(PRESETS["Conv_3L_8_12_16_3L_128_64_32_MAX_BN"], SEED_RECIPE)
        )
    )
    get_space("cnn").space(trial)
    assert {"conv0_channels", "conv2_kernel", "pool1_kernel", "fc2_units"} <= set(trial.params)


def test_unknown_space_names_the_choices():
    with pytest.raises(UsageError, match="unknown space 'nope': use one of .*cnn.*mlp"):
        get_space("nope")


def test_space_with_a_syntax_error_is_reported(tmp_path, monkeypatch):
    import spaces

    (tmp_path / "broken.py").write_text("def space(trial):\n    return (\n")
    monkeypatch.setattr(spaces, "__path__", [*spaces.__path__, str(tmp_path)])
    with pytest.raises(UsageError, match=r"spaces/broken.py has a syntax error at line \d"):
        get_space("broken")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_samples_the_cnn_space(name):
    study = optuna.create_study(sampler=make_sampler(name, 0), pruner=make_pruner("none", 2))
    space = get_space("cnn")

    def objective(trial):
        cfg = space.space(trial)
        return float(cfg.train.lr)

    study.optimize(objective, n_trials=12)
    assert len([t for t in study.trials if t.state.is_finished()]) == 12


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_is_made(name):
    assert isinstance(make_pruner(name, 5), optuna.pruners.BasePruner)


@pytest.mark.parametrize("name", ["hyperband", "sha", "median"])
def test_pruners_stop_a_trial_at_chance_after_two_epochs_even_alone(name):
    study = optuna.create_study(pruner=make_pruner(name, 15))
    dead, alive = study.ask(), study.ask()
    dead.report(2.31, 1)
    alive.report(2.31, 1)
    assert not dead.should_prune()  # one epoch is not enough to judge
    dead.report(2.31, 2)
    alive.report(2.20, 2)  # below a uniform guess's ln 10 = 2.3026: it learns, slowly
    assert dead.should_prune() and not alive.should_prune()


def test_successive_halving_surveys_the_first_sampled_trials_at_the_first_rung():
    """The study's first ``survey`` sampled trials stop at the first rung however good they are;
    enqueued trials (warm starts) are never surveyed; after the survey the usual rule applies."""
    from search.registry import SURVEY_KEY

    study = optuna.create_study(pruner=make_pruner("sha", 15, survey=2))
    study.enqueue_trial({"x": 0.0})
    warm = study.ask()
    warm.report(0.5, 1)
    assert not warm.should_prune()  # enqueued: not surveyed, and the best so far
    assert SURVEY_KEY not in study._storage.get_trial_system_attrs(warm._trial_id)
    study.tell(warm, 0.4)
    for value in (0.2, 0.1):  # each the best so far, still stopped: the survey
        trial = study.ask()
        trial.report(value, 1)
        assert trial.should_prune()
        assert study._storage.get_trial_system_attrs(trial._trial_id)[SURVEY_KEY] is True
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    after = study.ask()
    after.report(0.05, 1)
    assert not after.should_prune()  # the third sampled trial: ranked, and the best goes on
    after.report(0.04, 2)
    assert not after.should_prune()  # the survey is judged at the first rung only
    worse = study.ask()
    worse.report(0.9, 1)
    assert worse.should_prune()  # ranked against the field the survey left
    assert SURVEY_KEY not in study._storage.get_trial_system_attrs(worse._trial_id)


def test_the_surveys_best_is_named_once_the_survey_is_over_and_only_once():
    from search.registry import SURVEY_BEST, survey_best

    study = optuna.create_study(pruner=make_pruner("sha", 15, survey=3))
    numbers = []
    for value in (0.7, 0.3, 0.5):
        assert survey_best(study, 3) is None  # the survey is still running
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.report(value, 1)
        assert trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        numbers.append(trial.number)
    best = survey_best(study, 3)
    assert best is not None and best.number == numbers[1]  # the lowest first-rung loss
    assert survey_best(study, 2) is None  # a survey under three has no best to train again
    study.enqueue_trial(best.params, user_attrs={SURVEY_BEST: best.number})
    assert survey_best(study, 3) is None  # enqueued once


def test_the_survey_is_at_most_ten_trials_and_a_fifth_of_the_study():
    from search.registry import survey_size

    assert [survey_size(n) for n in (1, 4, 5, 12, 50, 500)] == [0, 0, 1, 2, 10, 10]
    assert survey_size(None) == 10
    # Without a survey, successive halving is Optuna's: the first trial goes on.
    study = optuna.create_study(pruner=make_pruner("sha", 15))
    trial = study.ask()
    trial.report(0.5, 1)
    assert not trial.should_prune()


def test_hyperband_is_still_recognised_by_the_samplers():
    # TPE samples within Hyperband's brackets only when the pruner is a HyperbandPruner.
    assert isinstance(make_pruner("hyperband", 15), optuna.pruners.HyperbandPruner)


def test_unknown_sampler_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown sampler 'bogus'"):
        make_sampler("bogus", 0)


def test_cnn_channels_may_at_most_double_from_block_to_block():
    from spaces.cnn import MAX_CHANNELS, MIN_CHANNELS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = get_space("cnn")
    for _ in range(200):
        trial = study.ask()
        blocks = space.space(trial).model.blocks
        assert all(MIN_CHANNELS[i] <= b.channels <= MAX_CHANNELS[i] for i, b in enumerate(blocks))
        study.tell(trial, 0.0)
    assert MAX_CHANNELS == (32, 64, 128, 128)


def test_cnn_space_reaches_modern_blocks_and_its_cost_stays_bounded():
    from search.models import CNNConfig, ConvBlock
    from spaces.cnn import MAX_CHANNELS, MAX_DOUBLE

    # The bound: four single 5x5 blocks at the single-conv caps, the widest FC layer.
    bound = multiply_adds(
        build_model(
            CNNConfig(blocks=tuple(ConvBlock(c, kernel=5) for c in MAX_CHANNELS), fc_hidden=(512,))
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    space = get_space("cnn")
    seen = {"double": 0, "residual": 0, "gap": 0}
    for _ in range(300):
        trial = study.ask()
        model_cfg = space.space(trial).model
        cost = multiply_adds(build_model(model_cfg))
        assert cost <= bound, (trial.params, cost, bound)
        for i, b in enumerate(model_cfg.blocks):
            if b.convs == 2:
                assert b.kernel == 3 and b.channels <= MAX_DOUBLE[i], trial.params
            if b.residual:
                assert b.kernel % 2 == 1, trial.params
        seen["double"] += any(b.convs == 2 for b in model_cfg.blocks)
        seen["residual"] += any(b.residual for b in model_cfg.blocks)
        seen["gap"] += model_cfg.head == "gap"
        study.tell(trial, 0.0)
    assert min(seen.values()) >= 20, seen  # every new feature is actually sampled


def test_cnn_space_leaves_out_the_regions_where_random_draws_did_not_learn():
    from spaces import cnn

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    seen = {"shallow non-bn": 0, "deep gap": 0, "plain sgd": 0, "weight decay": 0}
    seen |= {"erasing": 0, "smoothing": 0}
    for _ in range(300):
        trial = study.ask()
        cfg = cnn.space(trial)
        m, t = cfg.model, cfg.train
        n = len(m.blocks)
        assert all(b.channels >= cnn.MIN_CHANNELS[i] for i, b in enumerate(m.blocks))
        assert all(u >= cnn.MIN_FC_UNITS for u in m.fc_hidden)
        if n >= cnn.BN_FROM_BLOCKS:
            assert m.regularizer == "bn" and "regularizer" not in trial.params
        if n < cnn.GAP_FROM_BLOCKS:
            assert m.head == "flatten" and "head" not in trial.params
        if t.optimizer == "sgd":
            assert t.lr >= 0.05
        assert t.weight_decay <= 1e-3
        assert t.erasing <= 0.25 and t.label_smoothing <= 0.1
        seen["shallow non-bn"] += n < cnn.BN_FROM_BLOCKS and m.regularizer != "bn"
        seen["deep gap"] += m.head == "gap"
        seen["plain sgd"] += t.optimizer == "sgd"
        seen["weight decay"] += t.weight_decay > 0
        seen["erasing"] += t.erasing > 0.2
        seen["smoothing"] += t.label_smoothing > 0.08
        study.tell(trial, 0.0)
    assert min(seen.values()) >= 20, seen  # the choices that remain are still drawn


def test_every_cnn_draw_is_a_valid_geometry_and_the_forced_choices_are_not_drawn():
    from search.models import IMAGE_SIZE

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    space = get_space("cnn")
    forced = {"pad": 0, "kernel": 0}
    for _ in range(1500):
        trial = study.ask()
        model_cfg = space.space(trial).model
        model_cfg.feature_shapes()  # raises InvalidConfig on a collapsed map
        if trial.params["family"] != "any":  # the vgg family draws neither kernels nor pads
            study.tell(trial, 0.0)
            continue
        blocks = model_cfg.blocks
        side = IMAGE_SIZE
        for i, b in enumerate(blocks):
            if side == 1:  # only the centre tap of a kernel sees a 1x1 map
                assert b.kernel == 3 and f"conv{i}_kernel" not in trial.params
                forced["kernel"] += 1
            if b.conv_side(side) < b.pool_kernel:  # an unpadded pool would not fit
                assert b.pool_pad and f"pool{i}_pad" not in trial.params
                forced["pad"] += 1
            else:
                assert f"pool{i}_pad" in trial.params
            side = b.out_side(side)
            assert side >= 1
        study.tell(trial, 0.0)
    assert forced["pad"] >= 50 and forced["kernel"] >= 5, forced  # the rules are exercised


def test_cnn_family_vgg_draws_only_its_design_and_holds_the_vgg_warm_start():
    from spaces import cnn

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    families = {"any": 0, "vgg": 0}
    crops: set[int] = set()
    for _ in range(200):
        trial = study.ask()
        cfg = cnn.space(trial)
        family = trial.params["family"]
        families[family] += 1
        assert cnn.space(optuna.trial.FixedTrial(cnn.to_params(cfg))) == cfg
        if family == "vgg":
            assert cnn.is_vgg(cfg), trial.params
            assert all(name == "family" or name.startswith("vgg") for name in trial.params)
            m, t = cfg.model, cfg.train
            assert all(b.kernel == 3 and b.pool_kernel == 2 for b in m.blocks)
            assert (m.pool, m.regularizer, t.schedule) == ("max", "bn", "cosine")
            assert t.optimizer in ("adamw", "nesterov") and len(m.fc_hidden) <= 1
            crops.add(t.crop_pad)
        study.tell(trial, 0.0)
    assert min(families.values()) >= 70, families  # a random draw picks either
    assert sorted(crops) == [1, 2], crops  # vgg always crops, by 1 or 2 pixels' padding
    vgg = cnn.WARM_START["VGG-style_32_64_128_1L_128_MAX_BN/adamw-augment"]
    assert cnn.to_params(vgg)["family"] == "vgg"
    # The same design without crops is not a vgg point; it stays one of the space, in any.
    uncropped = RunConfig(vgg.model, dataclasses.replace(vgg.train, crop_pad=0))
    assert cnn.to_params(uncropped)["family"] == "any"
    assert cnn.space(optuna.trial.FixedTrial(cnn.to_params(uncropped))) == uncropped
    for name, model in PRESETS.items():  # the seed's recipe is plain SGD without a schedule
        if model.kind == "cnn":
            assert cnn.to_params(RunConfig(model, SEED_RECIPE))["family"] == "any", name


def test_a_cnn_study_from_before_the_families_goes_on_with_tpe():
    from spaces import cnn

    # cnn._any draws what the space drew before the families: the same names, no "family".
    study = optuna.create_study(sampler=make_sampler("tpe", 0))
    for i in range(12):
        trial = study.ask()
        cnn._any(trial)
        study.tell(trial, 1.0 + i / 10)
    for _ in range(12):
        trial = study.ask()
        cfg = cnn.space(trial)
        assert cnn.space(optuna.trial.FixedTrial(cnn.to_params(cfg))) == cfg
        study.tell(trial, 1.0)
    assert len(study.trials) == 24 and all(t.state.name == "COMPLETE" for t in study.trials)


def _families(sampler, n, prior=None):
    """The ``family`` of ``n`` cnn trials asked of a study with ``sampler``; each trial's value
    favours ``any`` so that TPE, once past its start-up, has reason to draw it."""
    study = optuna.create_study(sampler=sampler)
    space = get_space("cnn")
    drawn = []
    for _ in range(n):
        trial = study.ask()
        space.space(trial)
        drawn.append(trial.params["family"])
        study.tell(trial, 0.5 if trial.params["family"] == "any" else 1.0)
    return drawn


@pytest.mark.parametrize("name", ["tpe", "tpe-independent"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_start_up_follows_the_space_prior_then_tpe_decides(name, seed):
    prior = {"family": {"vgg": 0.9, "any": 0.1}}
    drawn = _families(make_sampler(name, seed, prior), 20)
    # The 10 start-up draws: the prior's shares exactly (9 and 1), in a seeded order.
    assert sorted(drawn[:10]) == ["any"] + ["vgg"] * 9
    # Then TPE's densities: any scored better, so TPE now draws it.
    assert drawn[10:].count("any") >= 8, drawn
    # Without the prior the start-up is uniform draws: both families, in other shares.
    assert drawn[:10] != _families(make_sampler(name, seed), 10)


@pytest.mark.parametrize("name", ["tpe", "tpe-independent"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_kept_prior_holds_after_the_start_up(name, seed):
    prior = {"family": {"vgg": 0.9, "any": 0.1}}
    drawn = _families(make_sampler(name, seed, prior, keep=("family",)), 30)
    # any scores better throughout, which made TPE draw it (test above); kept, every block of
    # 10 draws holds the prior's shares, the start-up's and TPE's alike.
    for block in (drawn[:10], drawn[10:20], drawn[20:]):
        assert sorted(block) == ["any"] + ["vgg"] * 9, drawn
    # The blocks are shuffled with the sampler's seed, not the same order each time.
    assert drawn[:10] != drawn[10:20] or drawn[10:20] != drawn[20:]


def test_a_kept_parameter_is_left_out_of_tpes_joint_model():
    sampler = make_sampler("tpe", 0, {"family": {"vgg": 0.9, "any": 0.1}}, keep=("family",))
    study = optuna.create_study(sampler=sampler)
    space = get_space("cnn")
    for _ in range(12):  # past the start-up: TPE now models the other parameters
        trial = study.ask()
        space.space(trial)
        study.tell(trial, 1.0)
    relative = sampler.infer_relative_search_space(study, study.trials[-1])
    assert "family" not in relative
    assert any(name.startswith("vgg") for name in relative)  # the rest is still TPE's


def test_the_cnn_space_keeps_its_family_prior(tmp_path):
    from search.engine import RunOptions, open_study
    from search.registry import keep_prior

    assert keep_prior("cnn") == ("family",)
    opts = RunOptions(space="cnn", storage=f"sqlite:///{tmp_path / 's.db'}", warm_start=False)
    study, _ = open_study(opts)
    space = get_space("cnn")
    drawn = []
    for _ in range(20):
        trial = study.ask()
        space.space(trial)
        drawn.append(trial.params["family"])
        study.tell(trial, 0.5 if trial.params["family"] == "any" else 1.0)
    assert drawn[10:].count("any") == 1, drawn  # TPE alone would draw any here (test above)


def test_a_choice_of_weight_zero_is_left_out_of_the_start_up():
    drawn = _families(make_sampler("tpe", 0, {"family": {"vgg": 1.0, "any": 0.0}}), 10)
    assert drawn == ["vgg"] * 10


def test_random_sampler_ignores_the_start_up_prior():
    only_vgg = {"family": {"vgg": 1.0, "any": 0.0}}
    assert "any" in _families(make_sampler("random", 0, only_vgg), 10)


def test_the_cnn_start_up_prior_favours_the_vgg_family():
    prior = registry_start_prior("cnn")
    assert prior["family"]["vgg"] > prior["family"]["any"] > 0  # any stays possible
    drawn = _families(make_sampler("tpe", 0, prior), 10)
    assert drawn.count("vgg") >= 8 and "any" in drawn, drawn


def test_the_engine_gives_tpe_the_space_prior(tmp_path, monkeypatch):
    from search.engine import RunOptions, open_study
    from spaces import cnn

    monkeypatch.setattr(cnn, "START_PRIOR", {"family": {"vgg": 0.0, "any": 1.0}})
    opts = RunOptions(space="cnn", storage=f"sqlite:///{tmp_path / 's.db'}", warm_start=False)
    study, created = open_study(opts)
    assert created
    for _ in range(5):
        trial = study.ask()
        cnn.space(trial)
        assert trial.params["family"] == "any"
        study.tell(trial, 1.0)


@pytest.mark.parametrize("keep", ["family", ("lr",), 3])
def test_a_broken_keep_prior_is_reported(tmp_path, monkeypatch, keep):
    import spaces

    (tmp_path / "kept.py").write_text(
        "from spaces.cnn import space, to_params, KIND, WARM_START, START_PRIOR\n"
        f"KEEP_PRIOR = {keep!r}\n"
    )
    monkeypatch.setattr(spaces, "__path__", [*spaces.__path__, str(tmp_path)])
    with pytest.raises(
        UsageError, match=r"spaces/kept.py: KEEP_PRIOR must be a tuple .* 'family'\); fix the file"
    ):
        get_space("kept")


@pytest.mark.parametrize(
    "prior", ["vgg", {"family": {"vgg": -1.0, "any": 2.0}}, {"family": {"vgg": 0, "any": 0}}]
)
def test_a_broken_start_prior_is_reported(tmp_path, monkeypatch, prior):
    import spaces

    (tmp_path / "priored.py").write_text(
        f"from spaces.cnn import space, to_params, KIND, WARM_START\nSTART_PRIOR = {prior!r}\n"
    )
    monkeypatch.setattr(spaces, "__path__", [*spaces.__path__, str(tmp_path)])
    with pytest.raises(UsageError, match=r"spaces/priored.py: START_PRIOR must map .*fix the file"):
        get_space("priored")
