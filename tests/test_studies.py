"""Read-only queries and what builds on them: `trials` (export), `--warm-from` (transfer between
studies) and the Python API (``search.api``)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import optuna
import pytest

from search import registry
from search.errors import UsageError, UserError

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def cnn(tiny_study):
    return tiny_study("cnn", trials=3, epochs=1, train_limit=2000)


def test_trials_csv_has_every_trial_with_its_facts_and_one_column_per_parameter(cli, cnn, tmp_path):
    path = tmp_path / "t.csv"
    result = cli("trials", "--study", "cnn", "--storage", cnn.url, "--csv", path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(path.open()))
    study = cnn.load()
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    names = {n for t in study.trials for n in t.params}
    assert {f"param_{n}" for n in names} <= set(rows[0])
    for row, t in zip(rows, study.trials, strict=True):
        assert row["state"] == t.state.name
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert float(row["value"]) == pytest.approx(t.value)
            assert float(row["val_accuracy"]) == pytest.approx(t.user_attrs["val_accuracy"])
            assert int(row["n_params"]) == t.user_attrs["n_params"]
            assert float(row["epochs_run"]) == t.user_attrs["epochs_run"] == 1
            assert float(row["seconds"]) > 0 and row["worker"]
        for n in names:  # a conditional parameter a trial lacks is an empty cell
            cell = row[f"param_{n}"]
            assert (cell == "") == (n not in t.params)
    assert not list(tmp_path.glob(".t.csv.*"))  # no temporary file left behind


def test_trials_json_and_stdout_csv_agree(cli, cnn):
    records = json.loads(cli("trials", "--study", "cnn", "--storage", cnn.url, "--json").output)
    assert [r["number"] for r in records] == [t.number for t in cnn.load().trials]
    assert all(r["values"] == ([r["value"]] if r["value"] is not None else None) for r in records)
    assert records[0]["params"] == cnn.load().trials[0].params
    text = cli("trials", "--study", "cnn", "--storage", cnn.url, "--csv", "-").output
    assert len(list(csv.DictReader(io.StringIO(text)))) == len(records)
    table = cli("trials", "--study", "cnn", "--storage", cnn.url).output
    assert "val acc" in table and "params" in table
    for r in records:  # a row per trial, with its number and state
        assert re.search(rf"\b{r['number']}\s+│\s+{r['state'].lower()}", table), table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--csv", "x.csv", "--json"], "--csv and --json both given"),
        (["--csv", "nowhere/x.csv"], "folder nowhere does not exist"),
        (["--csv", "."], "is a folder"),
    ],
)
def test_trials_bad_input_is_one_line(cli, cnn, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("trials", "--study", "cnn", "--storage", cnn.url, *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_warm_from_enqueues_the_best_configurations_of_an_earlier_study(tiny_study, tmp_path):
    from search.dashboard import DashboardHooks
    from search.engine import RunOptions, prepare
    from search.studies import best_trials

    # Unpruned, so that the source study has three complete trials: the VGG-style warm start
    # and two sampled ones.
    source = tiny_study("cnn", trials=3, epochs=1, train_limit=2000, pruner="none")
    db = source.copy_to(tmp_path)
    opts = RunOptions(space="cnn", study="next", storage=db.url, trials=5, warm_from="cnn:2")
    study = prepare(opts, DashboardHooks(db.url))  # as `run` does: the note is the dashboard's
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    best = best_trials(db.load(), 2)
    names = [f"cnn trial {t.number}" for t in best]
    ws_names = list(registry.get_space("cnn").WARM_START)
    assert [t.user_attrs["warm_start"] for t in waiting][:2] == names
    fixed = [t.system_attrs["fixed_params"] for t in waiting]
    for params, source in zip(fixed, best, strict=False):
        # The same configuration: rebuilt from the stored config, it samples the same values.
        assert params == source.params
    # Then the space's own warm start, up to --trials, without a configuration twice: the
    # built-in one follows unless it is one of the two best.
    taken = {t.user_attrs.get("warm_start") for t in best}
    rest = [n for n in ws_names if n not in taken]
    assert [t.user_attrs["warm_start"] for t in waiting][2:] == rest
    params = [json.dumps(p, sort_keys=True) for p in fixed]
    assert len(params) == len(set(params)) == 2 + len(rest)
    assert study.user_attrs["warm_from"] == names
    from optuna_dashboard import get_note

    assert f"warm-started from `{names[0]}`, `{names[1]}`" in get_note(study)


@pytest.mark.parametrize(
    "warm_from, error, message",
    [
        ("mlp", UserError, "no study 'mlp'"),
        ("cnn:0", UsageError, "is not STUDY or STUDY:K"),
        ("next", UsageError, "names the study being run"),
    ],
)
def test_warm_from_refusals(cnn, tmp_path, warm_from, error, message):
    from search.engine import RunOptions, prepare

    db = cnn.copy_to(tmp_path)
    with pytest.raises(error, match=re.escape(message)):
        prepare(RunOptions(space="cnn", study="next", storage=db.url, warm_from=warm_from))
    assert optuna.get_all_study_names(db.url) == ["cnn"]  # nothing created


def test_warm_from_another_space_is_refused_on_the_command_line(cli, cnn, tmp_path):
    db = cnn.copy_to(tmp_path)
    result = cli("run", "--space", "mlp", "--study", "m", "--storage", db.url,
                 "--warm-from", "cnn", "--trials", "1")  # fmt: skip
    assert result.exit_code == 2
    assert "study 'cnn' searched space 'cnn', not 'mlp'" in result.output
    assert optuna.get_all_study_names(db.url) == ["cnn"]


def test_the_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The README's example, as written there, in an empty folder."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    summary, folder, results = namespace["summary"], namespace["folder"], namespace["results"]
    assert summary.finished == 3 and summary.best is not None
    assert (folder / "results.json").is_file() and (folder / "best.pt").is_file()
    assert results.models[0].rank == 1 and results.models[0].trial == summary.best.number
    assert results.models[0].summary is not None
    assert Path("api.db").is_file()
