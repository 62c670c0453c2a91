"""The cluster recipe (deploy/): manifests that parse, containers whose command lines the real CLI
accepts with the environment the manifest gives them, and no secret written in plain text.

No cluster runs here: what a test can check without one is checked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from unittest import mock

import pytest
import typer
import yaml

from search import registry
from search.cli import app
from search.engine import RunOptions

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SBATCH = DEPLOY / "slurm" / "fmnist-search.sbatch"
# What the cluster puts where a manifest says valueFrom (a Secret, a field, a resource).
FROM_CLUSTER = {
    "secretKeyRef": "postgresql://fmnist:xyz@fmnist-search-db:5432/fmnist",
    "fieldRef": "3",
    "resourceFieldRef": "2",
}
# A database URL with a password in it; the docs' placeholder "PASSWORD" is not one.
PLAIN_PASSWORD_URL = re.compile(r"postgres(ql)?(\+\w+)?://[^:/@\s]+:(?!PASSWORD@)[^@\s]+@")
WORKLOADS = {"Job", "Deployment", "StatefulSet"}


def documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def containers() -> list[tuple[Path, dict, dict]]:
    found = []
    for path, doc in documents():
        if doc["kind"] in WORKLOADS:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                found.append((path, doc, c))
    return found


def container_env(c: dict) -> dict[str, str]:
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            (source,) = e["valueFrom"]
            env[e["name"]] = FROM_CLUSTER[source]
    return env


def parse(argv: list[str], env: dict[str, str]) -> tuple[str, dict]:
    """The real CLI's parsing of ``fmnist-search ARGV`` under ``env`` (nothing runs)."""
    group = typer.main.get_command(app)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_SEARCH_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        ctx = group.make_context("fmnist-search", list(argv))
        name, command, rest = group.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        return name, command.make_context(name, rest, parent=ctx).params


def check_run(params: dict) -> RunOptions:
    registry.get_space(params["space"])
    return RunOptions(
        space=params["space"],
        trials=params["trials"],
        study=params["study"],
        storage=params["storage"],
        timeout=params["timeout"],
        epochs=params["epochs"],
        sampler=params["sampler"],
        pruner=params["pruner"],
        seed=params["seed"],
        jobs=params["jobs"],
        worker=params["worker_index"],
    )


def test_every_manifest_parses_and_kustomize_lists_them_all():
    docs = documents()
    assert docs
    for path, doc in docs:
        assert {"apiVersion", "kind"} <= doc.keys(), path.name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"].startswith("fmnist-search"), path.name
    (kustomization,) = [d for _, d in docs if d["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_every_container_command_is_a_valid_fmnist_search_invocation():
    ours = [(p, d, c) for p, d, c in containers() if c.get("command", [""])[0] == "fmnist-search"]
    assert {d["kind"] for _, d, _ in ours} == {"Job", "Deployment"}
    for path, _, c in ours:
        name, params = parse([*c["command"][1:], *c.get("args", [])], container_env(c))
        if name == "run":
            opts = check_run(params)
            assert opts.study_name == "cnn-cluster" and opts.trials == 200
            assert opts.storage == FROM_CLUSTER["secretKeyRef"]
            assert opts.worker == 3  # the job-completion index, from the environment
        else:
            assert name == "dashboard", path.name
            assert params["host"] == "0.0.0.0" and params["port"] == 8080


def test_the_workers_are_an_indexed_job_with_threads_from_the_cpu_limit():
    (job,) = [d for _, d, _ in containers() if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    (worker,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    index = env["FMNIST_SEARCH_WORKER_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "job-completion-index" in index
    cpus = worker["resources"]["limits"]["cpu"]
    assert str(cpus) == str(worker["resources"]["requests"]["cpu"])


def test_images_match_the_project_version_and_the_dockerfile_pins_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tag = f"fmnist-search:{project['version']}"
    ours = [c for _, _, c in containers() if c["image"].startswith("fmnist-search")]
    assert ours and all(c["image"] == tag for c in ours)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"-t {tag} " in dockerfile
    for pin in ("torch==", "torchvision=="):
        (wanted,) = [d for d in project["dependencies"] if d.startswith(pin)]
        assert wanted in dockerfile
    assert "dataset-fashion-mnist" in dockerfile and "fmnist-search data" in dockerfile
    assert re.search(r'^ENTRYPOINT \["fmnist-search"\]$', dockerfile, re.M)


def test_no_secret_is_written_in_plain_text():
    for path, doc in documents():
        assert doc["kind"] != "Secret", f"{path.name} holds a Secret: create it with kubectl"
    for _, _, c in containers():
        for e in c.get("env", []):
            if re.search(r"PASSWORD|STORAGE|SECRET|TOKEN", e["name"]):
                assert "secretKeyRef" in e.get("valueFrom", {}), e["name"]
    for path in [*K8S.glob("*.yaml"), SBATCH, DEPLOY / "Dockerfile"]:
        assert not PLAIN_PASSWORD_URL.search(path.read_text()), path.name


def sbatch_run_line() -> tuple[list[str], dict[str, str]]:
    """The script's `fmnist-search run` command and the environment it exports (Slurm's
    variables given example values)."""
    text = SBATCH.read_text()
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "2", "PWD": "/shared/project"}
    env["FMNIST_SEARCH_STORAGE"] = FROM_CLUSTER["secretKeyRef"]  # read from a private file

    def expand(value: str) -> str:
        value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1], m[2]), value)
        return re.sub(r"\$\{?(\w+)\}?", lambda m: env[m[1]], value)

    for line in text.splitlines():
        m = re.match(r"export (\w+)=(\S+)", line)
        if m:
            env[m[1]] = expand(m[2])
    (run,) = [ln for ln in text.splitlines() if ln.startswith("exec ")]
    argv = shlex.split(run)[1:]
    assert argv[0].endswith("fmnist-search")
    return argv[1:], env


def test_the_slurm_script_is_valid_bash_and_a_valid_invocation():
    bash = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert bash.returncode == 0, bash.stderr
    directives = dict(
        re.match(r"#SBATCH --([\w-]+)(?:=(\S+))?", ln).groups()
        for ln in SBATCH.read_text().splitlines()
        if ln.startswith("#SBATCH")
    )
    assert directives["array"] == "0-7" and directives["cpus-per-task"] == "2"
    argv, env = sbatch_run_line()
    name, params = parse(argv, env)
    assert name == "run"
    opts = check_run(params)
    assert opts.worker == 3 and opts.trials == 200 and opts.study_name == "cnn-cluster"
    assert env["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("bad", ["x", "-1"])
def test_a_bad_value_from_the_environment_is_refused_with_its_variable_named(cli, bad):
    result = cli("run", env={"FMNIST_SEARCH_TRIALS": bad})
    assert result.exit_code == 2
    assert "FMNIST_SEARCH_TRIALS" in result.output or "--trials" in result.output
    assert "Traceback" not in result.output
