"""Classify a user's images: prepare them the way Fashion-MNIST was made, then run a checkpoint.

Fashion-MNIST's images are 28x28 grayscale, the item light on a black background, trimmed to
its bounding box, the longer side scaled to 28 and centred. ``prepare`` repeats that for any
picture (any size, any Pillow colour mode, dark-on-light photos included); an image that already
is a 28x28 light-on-dark one passes through unchanged, so a test image saved as PNG is
classified exactly as its tensor is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from search.checkpoint import Checkpoint
from search.checkpoint import load as load_checkpoint
from search.data import CLASSES
from search.errors import UserError, first_line
from search.training import normalize

SIZE = 28  # Fashion-MNIST's side, pixels
MAX_PIXELS = 40_000_000  # refuse larger pictures (decompression bombs); a 40 MP photo passes
BORDER = 0.05  # the border ring used to tell background from object: 5% of the shorter side
TRIM = 0.05  # object pixels differ from the background by > 5% of the range (as Zalando trimmed)
REPORTS = Path("reports")  # where `report` writes; the default model is the newest best.pt here


@dataclass
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    index: int  # the predicted class index


# --- reading ----------------------------------------------------------------------------------


def open_image(path: str | Path) -> Image.Image:
    """Open and decode the first frame of an image; a one-line UserError for anything bad."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image {path} does not exist: check the path")
    if not path.is_file():
        raise UserError(f"{path} is not a file: pass image files (PNG, JPEG, ...)")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and raises above twice that; both are refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Its other warnings (corrupt EXIF, ...) would print two lines of source location
            # to the user; the picture is decoded or refused with a clear message either way.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as img:
                w, h = img.size  # known from the header, before any pixel is decoded
                if w * h > MAX_PIXELS:
                    raise UserError(
                        f"image {path} is {w}x{h} pixels, more than the {MAX_PIXELS:,} accepted "
                        "(a decompression bomb?); shrink it first"
                    )
                img.seek(0)  # animated GIF/PNG/WebP: the first frame only
                img.load()
                # A copy, turned upright as phone photos' EXIF orientation says; the file closes.
                return ImageOps.exif_transpose(img)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"image {path} is too large to decode safely (a decompression bomb?); shrink it first"
        ) from None
    except UnidentifiedImageError:
        raise UserError(
            f"{path} is not an image Pillow can read: pass PNG, JPEG, GIF, WebP, BMP or TIFF"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        reason = first_line(exc)
        raise UserError(f"image {path} is damaged or truncated ({reason}); re-export it") from None


def to_gray(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 [H, W] luminance in 0..255."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode.startswith("I;16"):
            a = a / 257  # 16-bit -> 8-bit range
        elif a.max() > 255:
            a = a * (255 / a.max())
        return np.clip(a, 0, 255)
    if img.mode in ("LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    try:
        if img.mode != "RGBA":
            return np.asarray(img.convert("L"), dtype=np.float32)
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255
        lum = np.asarray(img.convert("L"), dtype=np.float32)
    except ValueError:  # modes Pillow cannot turn into grayscale (LAB, HSV, ...)
        raise UserError(f"colour mode {img.mode} is not supported: save the image as RGB") from None
    opaque = alpha > 0.5
    # Transparent areas become background of the opposite tone to the object, so a dark item on
    # transparency becomes dark-on-white (inverted below) and a light one light-on-black.
    item_is_dark = bool(opaque.any()) and float(lum[opaque].mean()) < 128
    background = 255.0 if item_is_dark else 0.0
    return lum * alpha + background * (1 - alpha)


# --- preparing --------------------------------------------------------------------------------


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of the outer ring, ``BORDER`` of the shorter side wide (at least 1 pixel)."""
    b = max(1, round(BORDER * min(a.shape)))
    mask = np.zeros(a.shape, dtype=bool)
    mask[:b, :] = mask[-b:, :] = mask[:, :b] = mask[:, -b:] = True
    return a[mask]


def is_light_on_dark(a: np.ndarray) -> bool:
    """Fashion-MNIST's polarity: the border (background) darker than the picture on average."""
    return float(_border(a).mean()) <= float(a.mean())


def prepare(a: np.ndarray) -> np.ndarray:
    """float [H, W] grayscale 0..255 -> uint8 [28, 28] as Fashion-MNIST: light item on black,
    trimmed to its bounding box, longer side scaled to 28, centred."""
    if a.shape == (SIZE, SIZE):
        # Already Fashion-MNIST's framing (its own images, saved as files): only the polarity is
        # fixed, so a test image saved as PNG, or its negative, gives back the exact tensor.
        return np.clip(np.round(a if is_light_on_dark(a) else 255 - a), 0, 255).astype(np.uint8)
    if not is_light_on_dark(a):
        a = 255 - a
    # The background's tone (a photo's is rarely pure black) becomes 0.
    border = _border(a)
    a = np.clip(a - float(np.median(border)), 0, None)
    peak = float(a.max())
    # Object pixels stand out from the background by TRIM of the range and by 4 times its noise
    # (robust std of the border, JPEG artefacts and sensor noise), so noise does not widen the box.
    noise = 1.4826 * float(np.median(np.abs(border - np.median(border))))
    mask = a > max(TRIM * peak, 4 * noise)
    # A row/column belongs to the object if 1% of it does: stray specks do not stretch the box.
    rows = np.flatnonzero(mask.sum(1) >= max(1, int(0.01 * a.shape[1])))
    cols = np.flatnonzero(mask.sum(0) >= max(1, int(0.01 * a.shape[0])))
    if peak <= 0 or len(rows) == 0 or len(cols) == 0:
        raise UserError("the image shows nothing but background (it is uniform)")
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] * (255 / peak)  # stretch to 0..255
    h, w = crop.shape
    scale = SIZE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Mode "F" keeps full precision. LANCZOS, being sharp, stands in for the sharpening Zalando
    # applied after shrinking; on test images enlarged 10x it agreed with the model's prediction
    # on the original more often than BOX averaging (96% vs 94% for a weak model).
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize((nw, nh), Image.Resampling.LANCZOS)
    )
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    # Fashion-MNIST centres an odd margin with the extra pixel above / left (measured: >99%).
    top, left = (SIZE - nh + 1) // 2, (SIZE - nw + 1) // 2
    canvas[top : top + nh, left : left + nw] = small
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Read ``path`` and prepare it: uint8 [28, 28]."""
    try:
        return prepare(to_gray(open_image(path)))
    except UserError as exc:
        if str(path) in str(exc):
            raise
        raise UserError(f"image {path}: {exc}") from None


# --- classifying ------------------------------------------------------------------------------


@torch.no_grad()
def probabilities(ckpt: Checkpoint, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> class probabilities [N, 10], normalised as the model was trained."""
    x = torch.as_tensor(images)
    device = next(ckpt.model.parameters()).device
    x = normalize(x, ckpt.mean, ckpt.std).to(device)
    return torch.softmax(ckpt.model.eval()(x).float(), dim=1).cpu()


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """A checkpoint (best.pt), or an ONNX model made by `fmnist-search export` (a TorchScript
    .ts file is refused with the reason: it carries code)."""
    if Path(path).suffix in (".onnx", ".ts"):
        from search import export

        return export.load(path)
    return load_checkpoint(path, device)


def predict_files(model: Any, paths: list[str | Path], top: int = 3) -> list[Prediction]:
    """Prepare every image first (so a bad file fails before any work), then classify them with
    ``model`` (a Checkpoint, or an exported model from ``load_model``)."""
    images = np.stack([load_image(p) for p in paths])
    if isinstance(model, Checkpoint):
        probs = probabilities(model, images)
    else:
        probs = torch.from_numpy(model.probabilities(images.astype(np.float32)))
    classes = list(model.classes or CLASSES)
    k = max(1, min(top, probs.shape[1]))
    result = []
    for path, p in zip(paths, probs, strict=True):
        values, idx = p.topk(k)
        top_k = [(classes[i], float(v)) for v, i in zip(values, idx.tolist(), strict=True)]
        result.append(Prediction(image=str(path), top=top_k, index=int(idx[0])))
    return result


def default_model(root: str | Path = REPORTS) -> Path:
    """The newest ``reports/*/best.pt``; a one-line UserError saying how to make one."""
    found = sorted(Path(root).glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"no model found (no {Path(root) / '*' / 'best.pt'}): make one with "
            "`fmnist-search report --study NAME`, or pass --model PATH"
        )
    return found[-1]
