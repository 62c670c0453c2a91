"""Batched augmentation on [B, 1, H, W] tensors: one call per batch, no per-sample Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Pad by ``pad`` pixels (zeros) and cut an HxW window at a random offset per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]  # [B,1,H,1]
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]  # [B,1,1,W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror left-right half of the batch, chosen at random."""
    flip = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_erasing(
    x: torch.Tensor,
    p: float,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Zero a random rectangle (area ``scale`` of the image, aspect ``ratio``) with probability p.

    Zero is the dataset mean after normalisation, as in torchvision's RandomErasing(value=0).
    """
    b, _, h, w = x.shape
    dev = gen.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen, device=dev)

    area = u(*scale) * h * w
    log_r = u(float(torch.tensor(ratio[0]).log()), float(torch.tensor(ratio[1]).log()))
    aspect = log_r.exp()
    eh = (area * aspect).sqrt().clamp(1, h).floor()
    ew = (area / aspect).sqrt().clamp(1, w).floor()
    top = (u(0, 1) * (h - eh + 1)).floor()
    left = (u(0, 1) * (w - ew + 1)).floor()
    on = torch.rand(b, generator=gen, device=dev) < p
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    in_y = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # [B, H]
    in_x = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # [B, W]
    mask = (in_y[:, :, None] & in_x[:, None, :] & on[:, None, None])[:, None].to(x.device)
    return x.masked_fill(mask, 0.0)
