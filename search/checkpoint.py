"""Checkpoints: a model's weights with everything needed to use it again, loadable safely.

A checkpoint is a plain dict saved with ``torch.save`` holding only tensors, dicts, lists, str,
int, float, bool and None, so that ``torch.load(path, weights_only=True)`` opens it without
running any pickled code. Loading here always uses ``weights_only=True``.

One network's checkpoint (best.pt) holds its ``state_dict``, ``config`` and ``tta``; an
ensemble's (ensemble.pt, ``save_ensemble``) holds ``members``, a list of such dicts, whose class
probabilities ``load`` averages (``models.Averaged``). Both share the normalisation, classes,
space, versions and meta.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search.data import CLASSES
from search.errors import InvalidConfig, UserError, first_line
from search.models import Averaged, FlipAveraged, build_model
from search.training import TTAS, RunConfig, for_inference, versions

FORMAT = "fmnist-search-checkpoint"
FORMAT_VERSION = 1
MAKE_ONE = "`fmnist-search report --study NAME` makes one"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode) and how its inputs must be prepared."""

    model: nn.Module
    config: RunConfig  # an ensemble's: its first member's (see ``configs``)
    mean: float  # input normalisation: (pixel / 255 - mean) / std
    std: float
    classes: list[str]
    space: str | None
    versions: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)  # study, trial, seed, scores, ...
    path: Path | None = None
    # Test-time augmentation ``model`` applies ("flip": FlipAveraged); an ensemble's members
    # each apply their own: their common one, or "mixed".
    tta: str = "none"
    # An ensemble's members' configs (one per member, in order); [config] for one network.
    configs: list[RunConfig] = field(default_factory=list)

    @property
    def members(self) -> int:
        """Networks whose predictions ``model`` averages: 1, or an ensemble's size."""
        return max(1, len(self.configs))


def _plain(value: Any) -> Any:
    """Tuples (dataclass fields) -> lists, so the file holds only weights_only-safe types."""
    return json.loads(json.dumps(value))


def weights_to_bytes(model: nn.Module) -> bytes:
    """A model's weights on the CPU as bytes, to hand from a worker process to its parent."""
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def weights_from_bytes(weights: bytes) -> dict[str, torch.Tensor]:
    """The state dict that ``weights_to_bytes`` wrote (loaded with ``weights_only=True``)."""
    return torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)


def package_version() -> str:
    from search import __version__

    return __version__


def save(
    path: str | Path,
    model: nn.Module,
    config: RunConfig,
    mean: float,
    std: float,
    space: str | None,
    meta: dict[str, Any] | None = None,
    tta: str = "none",
) -> Path:
    """Write the checkpoint atomically (temporary file in the same folder, then rename).

    ``model`` is the trained network; ``tta`` ("flip" or "none", see ``training.TTAS``) is how
    ``load`` wraps it for use. A model already wrapped in FlipAveraged (one ``load`` gave) is
    saved as the network inside with ``tta="flip"``."""
    return _write(path, _network(model, config, tta) | _shared(mean, std, space, meta))


def save_ensemble(
    path: str | Path,
    members: list[tuple[nn.Module, RunConfig, str]],
    mean: float,
    std: float,
    space: str | None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write an ensemble's checkpoint atomically: ``members`` as (trained network, its config,
    its test-time augmentation), all trained on inputs normalised by ``mean`` and ``std``;
    ``load`` averages their class probabilities."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    payload = {"members": [_network(*m) for m in members]} | _shared(mean, std, space, meta)
    return _write(path, payload)


def _network(model: nn.Module, config: RunConfig, tta: str) -> dict[str, Any]:
    """One network's part of a checkpoint; a FlipAveraged model is saved as the network inside
    with ``tta="flip"``."""
    if isinstance(model, Averaged):
        raise ValueError("an ensemble is saved with save_ensemble, one network per member")
    if isinstance(model, FlipAveraged):
        model, tta = model.model, "flip"
    return {
        # Copies on the CPU: a checkpoint made on a GPU loads anywhere.
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": _plain(config.to_dict()),
        "tta": tta,
    }


def _shared(mean: float, std: float, space: str | None, meta: dict[str, Any] | None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "normalization": {"mean": float(mean), "std": float(std)},
        "classes": list(CLASSES),
        "space": space,
        "versions": _plain({**versions(), "fmnist-search": package_version()}),
        "meta": _plain(meta or {}),
    }


def _write(path: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report's model is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _reason(exc: Exception) -> str:
    """torch.load's errors run to a page; say in a few words what is wrong with the file."""
    text = str(exc).strip()
    # "Unsupported global: GLOBAL x.Y", or for blocked modules (os, posix, ...)
    # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
    if found:
        return f"it holds a pickled {found[1]}, which loading with weights_only=True refuses"
    if isinstance(exc, EOFError) or not text:
        return "the file is empty or cut short"
    # A text file fails to unpickle as one of those, or as a KeyError (e.g. "hello": '101').
    if "Weights only load failed" in text or isinstance(exc, KeyError):
        return "it is not a PyTorch file"
    return f"corrupt or cut short: {text.splitlines()[0].split('. ')[0][:160]}"


def _not_ours(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not an fmnist-search checkpoint ({why}); {MAKE_ONE}")


def load(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint with ``weights_only=True``; a one-line UserError for any bad file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: {MAKE_ONE}")
    if not path.is_file():
        raise UserError(f"{path} is not a file: pass the path of a best.pt ({MAKE_ONE})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle with code in it, ...
        raise UserError(
            f"{path} cannot be read as a checkpoint ({_reason(exc)}); {MAKE_ONE}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _not_ours(path, "it lacks our format marker")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has checkpoint format {payload.get('format_version')!r}, this version reads "
            f"{FORMAT_VERSION}; remake it with `fmnist-search report --study NAME`"
        )
    try:
        norm = payload["normalization"]
        mean, std = float(norm["mean"]), float(norm["std"])
        members = payload["members"] if "members" in payload else [payload]
        if not isinstance(members, list) or not members:
            raise ValueError("an ensemble without members")
        networks = [_load_network(m) for m in members]
    except (KeyError, TypeError, ValueError, RuntimeError, InvalidConfig) as exc:
        detail = first_line(exc)
        raise _not_ours(path, f"its contents do not fit: {detail[:200]}") from None
    ttas = {tta for _, _, tta in networks}
    if "members" in payload:
        model: nn.Module = Averaged([for_inference(m, tta) for m, _, tta in networks])
        tta = ttas.pop() if len(ttas) == 1 else "mixed"  # each member applies its own
    else:
        ((network, _, tta),) = networks
        model = for_inference(network, tta)
    return Checkpoint(
        model=model.to(device).eval(),
        config=networks[0][1],
        configs=[c for _, c, _ in networks] if "members" in payload else [],
        mean=mean,
        std=std,
        classes=list(payload.get("classes") or CLASSES),
        space=payload.get("space"),
        versions=dict(payload.get("versions") or {}),
        meta=dict(payload.get("meta") or {}),
        path=path,
        tta=tta,
    )


def _load_network(part: dict[str, Any]) -> tuple[nn.Module, RunConfig, str]:
    """(network, config, test-time augmentation) of one network's part of a checkpoint."""
    config = RunConfig.from_dict(part["config"])
    model = build_model(config.model)
    model.load_state_dict(part["state_dict"])
    tta = part.get("tta", "none")  # absent from checkpoints made before it existed
    if tta not in TTAS:
        raise ValueError(f"unknown test-time augmentation {tta!r}")
    return model, config, tta
