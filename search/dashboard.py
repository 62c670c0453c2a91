"""What the Optuna dashboard shows of a study, and the server that shows it.

The engine never imports this module: it is given ``DashboardHooks`` (by the CLI) and calls them.
Notes (markdown, stored with the study by ``optuna_dashboard.save_note``): ``study_created`` runs
once per new study, and ``report_written`` appends a report's summary (made by the report).
Artifacts (PNG files in a ``FileSystemArtifactStore``, registered with ``optuna.artifacts``):
``trial_trained`` uploads each trained trial's learning curves and validation confusion matrix;
``report_written`` uploads the report's figures to the study.

Where artifacts live is a function of the storage URL alone (``artifact_dir``), so the workers
that upload them and ``fmnist-search dashboard`` that serves them agree without configuration.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from search.errors import UserError, first_line
from search.storage import get_storage, mask_password, sqlite_path, storage_url

ENV_ARTIFACTS = "FMNIST_SEARCH_ARTIFACTS"  # overrides the artifact folder for every command
ARTIFACTS = "artifacts"  # folder name: beside the SQLite file, else in the working directory
ARTIFACTS_OFF = "none"  # $FMNIST_SEARCH_ARTIFACTS / --artifacts value that turns artifacts off
LEARNING_CURVES = "learning_curves.png"  # per-trial artifact file names
CONFUSION = "val_confusion.png"
WARNING_ATTR = "dashboard_warning"  # user attribute of a trial whose artifacts failed to upload
# Below this line the study note is the report's. A markdown link definition: not displayed.
REPORT_MARK = "[fmnist-search-report]: #"


# --- where artifacts live ---------------------------------------------------------------------


def artifact_dir(url: str | None = None, override: str | Path | None = None) -> Path:
    """The artifact folder of storage ``url``: ``override`` (``--artifacts``), else
    ``$FMNIST_SEARCH_ARTIFACTS``, else ``artifacts/`` beside the SQLite file, else (PostgreSQL,
    journal files) ``./artifacts`` in the working directory."""
    chosen = override or os.environ.get(ENV_ARTIFACTS)
    if chosen:
        return Path(chosen)
    url = storage_url(url)
    if url.startswith("sqlite:///"):
        return sqlite_path(url).parent / ARTIFACTS
    return Path(ARTIFACTS)


def artifacts_off(override: str | Path | None = None) -> bool:
    """``--artifacts none`` / ``FMNIST_SEARCH_ARTIFACTS=none``: no artifact folder at all (workers
    on machines that share none); trial notes and learning curves still show the results."""
    return str(override or os.environ.get(ENV_ARTIFACTS, "")).lower() == ARTIFACTS_OFF


def trial_note(number: int, attrs: dict[str, Any]) -> str:
    """A trained trial's markdown note: its score, learning curve and validation confusion
    matrix as tables (stored with the trial, so no artifact folder is needed to see them)."""
    from search.data import CLASSES

    history = attrs.get("history") or []
    lines = [
        f"## Trial {number}: validation accuracy {attrs.get('val_accuracy', float('nan')):.4f}",
        "",
        "| epoch | images seen | train loss | val loss | val accuracy | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for h in history:
        seen = h.get("images_seen")
        lines.append(
            f"| {h.get('epoch', 0):g} | {'-' if seen is None else f'{int(seen):,}'} "
            f"| {h.get('train_loss', float('nan')):.4f} | {h.get('val_loss', float('nan')):.4f} "
            f"| {h.get('val_accuracy', float('nan')):.4f} | {h.get('seconds', 0):.0f} |"
        )
    confusion = attrs.get("val_confusion")
    if confusion:
        short = [c.split("/")[0].split(" ")[0] for c in CLASSES]
        lines += [
            "",
            "Validation confusion (rows: true class, columns: predicted):",
            "",
            "| true \\ predicted | " + " | ".join(short) + " |",
            "|---|" + "---:|" * len(short),
        ]
        for name, row in zip(short, confusion, strict=False):
            lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines)


def artifact_store(
    url: str | None = None, override: str | Path | None = None
) -> FileSystemArtifactStore:
    """A ``FileSystemArtifactStore`` on ``artifact_dir(url, override)``, creating the folder."""
    folder = artifact_dir(url, override)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the artifact folder {folder} ({exc.strerror}); "
            f"pick another with --artifacts or ${ENV_ARTIFACTS}"
        ) from None
    return FileSystemArtifactStore(folder)


# --- notes ------------------------------------------------------------------------------------


def _versions(attrs: dict[str, Any]) -> str:
    import optuna_dashboard

    from search import __version__

    v = {**attrs.get("versions", {})}
    platform = v.pop("platform", None)
    v |= {"optuna-dashboard": optuna_dashboard.__version__, "fmnist-search": __version__}
    text = ", ".join(f"{k} {val}" for k, val in v.items())
    return text + (f" on {platform}" if platform else "")


def _step_axis(attrs: dict[str, Any]) -> str:
    if attrs.get("fidelity") == "images":
        return (
            "training images seen; the first epoch is trained in three passes over stratified "
            "subsets (1/5, 2/5 and 2/5 of the split), each followed by a validation, so the "
            "first rungs judge a trial after 1/5 and 3/5 of an epoch"
        )
    return "epochs"


def _objectives(attrs: dict[str, Any]) -> str:
    text = (
        "validation cross-entropy (`val_loss`), minimised, reported after every pass (the "
        "learning curves)"
    )
    others = attrs.get("objectives", ["val_loss"])[1:]
    if not others:
        return text
    what = {
        "params": "the parameter count (`n_params`)",
        "latency": "the latency at batch 1 in ms (`latency_ms`, measured before training)",
    }
    return (
        "two, both minimised: validation cross-entropy (`val_loss`) and "
        f"{what[others[0]]}; the Pareto front is the study's best trials. Trials are pruned "
        "by successive halving on validation loss (stored per rung, as Optuna takes no "
        "reports from such studies); each trial's note and `history` hold its learning curve"
    )


def _first_trials(attrs: dict[str, Any]) -> list[str]:
    """Where a study's first trials came from, when ``--warm-from`` chose them."""
    source = attrs.get("warm_from")
    if not source:
        return []
    return [f"- **first trials:** warm-started from {', '.join(f'`{s}`' for s in source)}"]


def _budgets(attrs: dict[str, Any]) -> list[str]:
    from search.studies import describe_budgets

    text = describe_budgets(attrs)
    return [f"- **budgets:** {text}; configurations over them are pruned untrained"] if text else []


def study_note(name: str, attrs: dict[str, Any]) -> str:
    """The markdown note of a study, from its user attributes (see ``engine.open_study``)."""
    seed = attrs.get("seed", 42)
    limit = attrs.get("train_limit")
    subset = f", of which a stratified {limit:,} are trained on" if limit else ""
    command = attrs.get("command") or "(not recorded)"
    return "\n".join(
        [
            f"## Study `{name}`: search space `{attrs.get('space')}`",
            "",
            f"- **command:** `{command}`",
            "- **split:** the 60,000 Fashion-MNIST training images, split stratified into "
            f"50,000 training / 10,000 validation images (`random_state={seed}`){subset}; the "
            "search never reads the test set",
            f"- **seed:** {seed} (the split, the sampler, and each trial with its number)",
            f"- **objective:** {_objectives(attrs)}; epoch budget per trial: {attrs.get('epochs')}",
            f"- **step axis of the intermediate values:** {_step_axis(attrs)}",
            f"- **sampler:** {attrs.get('sampler')}, **pruner:** {attrs.get('pruner')}",
            *_first_trials(attrs),
            *_budgets(attrs),
            f"- **versions:** {_versions(attrs)}",
            "",
            "Each trained trial has a note with its learning curve and validation confusion "
            "matrix as tables, and (unless artifacts are off) the same two as PNG artifacts. "
            "User attributes hold `val_accuracy`, per-class accuracy, the confusion counts, the "
            "per-epoch history, the worker that trained it and the resolved `config`.",
        ]
    )


class DashboardHooks:
    """The engine's hooks (``search.engine.Hooks``) that feed the dashboard: a note on each new
    study, and two figures on each trained trial. Picklable, so ``--jobs`` workers get a copy."""

    def __init__(self, storage: str | None = None) -> None:
        self.url = storage_url(storage)

    def study_created(self, study: optuna.Study) -> None:
        """Attach a markdown note (space, command line, split, seed, versions) to a new study."""
        from optuna_dashboard import save_note

        save_note(study, study_note(study.study_name, study.user_attrs))

    def trial_trained(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Give a trained trial a note (its learning curve and confusion matrix as tables) and
        upload its learning-curve and confusion-matrix PNGs as artifacts (unless artifacts are
        off), drawn from its stored ``history`` and ``val_confusion`` user attributes.

        Never fails the trial: any error becomes the trial's ``dashboard_warning`` attribute.
        """
        try:
            from optuna_dashboard import save_note

            # In the storage itself: readable where the workers share no artifact folder.
            save_note(trial, trial_note(trial.number, trial.user_attrs))
            if not artifacts_off():
                _upload_trial_figures(study, trial, artifact_store(self.url))
        except Exception as exc:  # the trial's result matters more than its pictures
            message = first_line(f"artifacts not uploaded: {type(exc).__name__}: {exc}")
            try:
                trial.set_user_attr(WARNING_ATTR, message)
            except Exception:
                pass  # the storage is gone; the engine reports that at its next call


def _upload_trial_figures(
    study: optuna.Study, trial: optuna.Trial, store: FileSystemArtifactStore
) -> None:
    from search import plots  # matplotlib: imported on the first trial, not by every command
    from search.data import CLASSES

    attrs = trial.user_attrs
    label = f"trial {trial.number}"
    with tempfile.TemporaryDirectory(prefix="fmnist-artifacts-") as tmp:
        curves = plots.learning_curves(
            [{"label": label, "histories": [attrs["history"]]}], Path(tmp) / LEARNING_CURVES
        )
        confusion = plots.confusion_matrix(
            attrs["val_confusion"],
            CLASSES,
            Path(tmp) / CONFUSION,
            title=f"{study.study_name} {label}: validation confusion, row-normalised "
            f"(accuracy {attrs['val_accuracy']:.4f})",
        )
        for path in (curves, confusion):
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def report_written(
    storage: str | None, study_name: str, summary: str, figures: Sequence[Path]
) -> str | None:
    """Put a report's ``summary`` (markdown) into its study's note, below the study's own part,
    and its figures into the study's artifacts, replacing an earlier report's.

    Returns None, or a one-line warning: the report is whole without the dashboard's copy.
    """
    try:
        from optuna_dashboard import get_note, save_note

        url = storage_url(storage)
        study = optuna.load_study(study_name=study_name, storage=get_storage(url))
        own = get_note(study).split(REPORT_MARK)[0].rstrip()
        own = own or study_note(study.study_name, study.user_attrs)
        save_note(study, f"{own}\n\n{REPORT_MARK}\n\n{summary}")
        if artifacts_off():
            return None
        store = artifact_store(url)
        try:
            earlier = {m.filename: m.artifact_id for m in get_all_artifact_meta(study)}
        except (TypeError, KeyError):  # an artifact deleted in the dashboard leaves a null
            earlier = {}
        for path in figures:
            if path.name in earlier:  # same artifact, new content: no pile of old reports
                with open(path, "rb") as fh:
                    store.write(earlier[path.name], fh)
            else:
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    except Exception as exc:
        return f"the dashboard's copy of the report was not saved ({type(exc).__name__}: {exc})"
    return None


# --- the server -------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per request (as optuna-dashboard's own command runs it)."""

    daemon_threads = True  # Ctrl-C does not wait for open browser connections


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise
        pass


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str) -> str | None:
    """A one-line warning when the dashboard listens beyond this machine (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"warning: the dashboard listens on {host}, reachable from other machines; it has no "
        "login and can delete studies (use --host 127.0.0.1 to keep it local)"
    )


def make_server(
    storage: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifacts: str | Path | None = None,
) -> WSGIServer:
    """optuna-dashboard (its ``wsgi`` app) on ``storage`` with its artifact store, bound to
    ``host:port`` (port 0: any free port, see ``server.server_port``) but not yet serving."""
    from optuna_dashboard import wsgi

    url = storage_url(storage)
    if url.startswith("sqlite:///") and not sqlite_path(url).exists():
        raise UserError(
            f"storage {url}: {sqlite_path(url)} does not exist; start a study there first "
            f"(`fmnist-search run --storage {url}`) or pass the right --storage"
        )
    store = None if artifacts_off(artifacts) else artifact_store(url, artifacts)
    app = wsgi(get_storage(url), artifact_store=store)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), _QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} is already in use (another dashboard?); "
                f"pick a free one with --port, e.g. --port {port + 1}"
            ) from None
        if exc.errno == errno.EACCES:
            raise UserError(
                f"no permission to listen on port {port} (ports below 1024 need root); "
                "pick another with --port, e.g. --port 8080"
            ) from None
        raise UserError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass an address of this "
            "machine with --host (default 127.0.0.1)"
        ) from None
    except (TypeError, ValueError):  # a name the resolver cannot encode: "\x80", "a\0b"
        raise UserError(
            f"--host {host!r} is not a host name or address; pass one of this machine, "
            "e.g. --host 127.0.0.1"
        ) from None
    server.set_app(app)
    return server


def address(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(server: WSGIServer) -> None:
    """Serve until Ctrl-C (or SIGTERM), then close the socket."""
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def describe(server: WSGIServer, storage: str | None, artifacts: str | Path | None) -> str:
    url = storage_url(storage)
    folder = "off" if artifacts_off(artifacts) else artifact_dir(url, artifacts)
    return (
        f"optuna-dashboard on {address(server)}/dashboard (storage {mask_password(url)}, "
        f"artifacts {folder}); Ctrl-C stops it"
    )
