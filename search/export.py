"""Deployable models: a checkpoint exported to ONNX or TorchScript, verified before it is kept.

The exported model takes raw images, float32 ``[N, 28, 28]`` with pixel values 0..255 (as
Fashion-MNIST stores them: light item on black), normalises them inside the graph as the model
was trained, and returns class probabilities ``[N, 10]``. The class names travel with the file
(ONNX metadata ``classes``; TorchScript extra file ``classes.json``). Before the file is put in
place, its outputs are compared with PyTorch's on ``VERIFY_IMAGES`` test images; a difference
above ``TOLERANCE`` removes it with an error. ONNX needs the ``export`` extra (onnx, onnxscript,
onnxruntime): ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search import latency
from search.checkpoint import Checkpoint
from search.errors import UsageError, UserError, first_line

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
VERIFY_IMAGES = 1000
TOLERANCE = 1e-4  # largest absolute difference in a class probability
EXTRA = 'the ONNX tools are an optional extra: pip install -e ".[export]"'


class Deployable(nn.Module):
    """raw pixels float [N, 28, 28] (0..255) -> class probabilities [N, 10]."""

    def __init__(self, model: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.unsqueeze(1) / 255 - self.mean) / self.std
        return torch.softmax(self.model(x), dim=1)


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float  # against PyTorch, on ``images`` test images
    images: int
    latency: latency.Latency  # the exported model's, on this machine


def default_path(ckpt: Checkpoint, fmt: str) -> Path:
    assert ckpt.path is not None
    return ckpt.path.with_suffix(FORMATS[fmt])


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UserError(f"cannot export to ONNX here: {EXTRA}") from None


def export(ckpt: Checkpoint, fmt: str, out: Path | None, test_images: torch.Tensor) -> Exported:
    """Export ``ckpt`` to ``out`` (default: beside the checkpoint), verify it, measure it."""
    check_format(fmt)
    out = Path(out) if out is not None else default_path(ckpt, fmt)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder: give a file name, e.g. {out / ('model' + FORMATS[fmt])}"
        )
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist; create it first")
    wrapper = Deployable(ckpt.model.float().cpu().eval(), ckpt.mean, ckpt.std).eval()
    images = test_images[:VERIFY_IMAGES].float()
    with torch.inference_mode():
        expected = wrapper(images).numpy()
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=FORMATS[fmt])
    os.close(fd)
    tmp = Path(name)
    try:
        if fmt == "onnx":
            _write_onnx(wrapper, tmp, ckpt.classes)
        else:
            _write_torchscript(wrapper, tmp, ckpt.classes)
        model = OnnxModel(tmp) if fmt == "onnx" else _JustWritten(tmp)
        got = model.probabilities(images.numpy())
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise UserError(
                f"the exported {fmt} model differs from PyTorch's by up to {diff:.2g} on "
                f"{len(images)} test images (tolerance {TOLERANCE:g}); nothing was written"
            )
        lat = model.latency()
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a deployable model is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Exported(out, fmt, out.stat().st_size, diff, len(images), lat)


def _write_torchscript(wrapper: Deployable, path: Path, classes: list[str]) -> None:
    example = torch.zeros(2, 28, 28)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notices
        traced = torch.jit.trace(wrapper, example)
        torch.jit.save(traced, str(path), _extra_files={"classes.json": json.dumps(classes)})


def _write_onnx(wrapper: Deployable, path: Path, classes: list[str]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                wrapper,
                (torch.zeros(2, 28, 28),),
                dynamo=True,
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_shapes=({0: batch},),
                external_data=False,
            )
        except Exception as exc:
            raise UserError(f"the ONNX exporter failed: {first_line(exc)[:300]}") from None
    proto = program.model_proto
    proto.metadata_props.add(key="classes", value=json.dumps(classes))
    proto.metadata_props.add(
        key="input", value="float32 [N, 28, 28], pixel values 0..255, light item on black"
    )
    onnx.save_model(proto, str(path))


# --- loading an exported model ------------------------------------------------------------------


class ExportedModel:
    """An exported file, loaded to classify: ``probabilities(uint8/float [N, 28, 28])``."""

    path: Path
    classes: list[str]

    def probabilities(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def latency(self) -> latency.Latency:
        raise NotImplementedError


class _JustWritten(ExportedModel):
    """The TorchScript file this process has just written, loaded back to verify it. Nothing
    else here loads TorchScript: an archive carries code, so `predict` takes checkpoints (read
    with weights_only=True) and ONNX models (data) only."""

    def __init__(self, path: Path) -> None:
        extra = {"classes.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        self.path, self.classes = path, json.loads(extra["classes.json"] or "null")

    def probabilities(self, images: Any) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.as_tensor(np.asarray(images), dtype=torch.float32)).numpy()

    def latency(self) -> latency.Latency:
        return latency.measure(self.module, "cpu", input_shape=(28, 28))


class OnnxModel(ExportedModel):
    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"cannot run {path}: {EXTRA}") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(
                f"{path} is not a usable ONNX model ({first_line(exc)[:200]})"
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.path, self.classes = path, json.loads(meta.get("classes", "null"))
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, images: Any) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        return self.session.run(None, {self.input: x})[0]

    def latency(self) -> latency.Latency:
        one = np.zeros((1, 28, 28), np.float32)
        ms = latency.median_ms(lambda: self.session.run(None, {self.input: one}))
        return latency.Latency(ms, None, None, os.cpu_count() or 1, "cpu (onnxruntime)")


def load(path: str | Path) -> ExportedModel:
    """An exported ONNX model, to classify with (a TorchScript file is refused: it carries code,
    and `predict` runs no code from files)."""
    path = Path(path)
    if path.suffix == ".ts":
        raise UserError(
            f"{path} is a TorchScript archive, which carries code: predict loads checkpoints "
            "(best.pt) and ONNX models; export one with `fmnist-search export --format onnx`"
        )
    if not path.is_file():
        raise UserError(f"no model at {path}: export one with `fmnist-search export`")
    return OnnxModel(path)
