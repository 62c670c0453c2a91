"""Inference latency, measured one way wherever it is used (budgets, trials, the report).

``measure`` times a model's forward pass in evaluation mode, float32, without gradients, on the
device it is given, with the threads PyTorch uses at that moment (stated in the result): a
warm-up, then the median of repeated passes at batch 1 and, if asked, per image at a throughput
batch. On a CUDA device every pass is synchronised before the clock stops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

WARMUP = 5  # passes before timing (allocations, one-off kernel choices)
REPEATS = 25  # timed passes at most; the median counts
TIME_BOX = 0.4  # seconds of timed passes at most per batch size (a big model gets fewer)
THROUGHPUT_BATCH = 256


@dataclass(frozen=True)
class Latency:
    batch1_ms: float  # median milliseconds of one forward pass of one 28x28 image
    per_image_ms: float | None  # median milliseconds per image at ``batch`` (None: not measured)
    batch: int | None
    threads: int  # torch.get_num_threads() while measuring
    device: str

    def describe(self) -> str:
        text = f"{self.batch1_ms:.3f} ms at batch 1"
        if self.per_image_ms is not None:
            text += f", {self.per_image_ms:.4f} ms per image at batch {self.batch}"
        return f"{text} ({self.device}, {self.threads} thread{'s' * (self.threads != 1)})"


def median_ms(run: Callable[[], object], repeats: int = REPEATS, sync=None) -> float:
    """Median milliseconds of ``run()`` after the warm-up (``sync()`` before each clock stop)."""
    sync = sync or (lambda: None)
    for _ in range(WARMUP):
        run()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + TIME_BOX
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(
    model: nn.Module,
    device: torch.device | str = "cpu",
    throughput_batch: int | None = None,
    repeats: int = REPEATS,
    input_shape: tuple[int, ...] = (1, 28, 28),
) -> Latency:
    """The model's latency on ``device`` (its weights are moved there). ``throughput_batch``
    also measures milliseconds per image at that batch size. ``input_shape``: one image's shape
    as the model takes it (an exported model takes raw [28, 28] images)."""
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    try:
        with torch.inference_mode():
            x = torch.randn(1, *input_shape, device=device)
            one = median_ms(lambda: model(x), repeats, sync)
            per_image = None
            if throughput_batch:
                xb = torch.randn(throughput_batch, *input_shape, device=device)
                per_image = median_ms(lambda: model(xb), repeats, sync) / throughput_batch
    finally:
        model.train(was_training)
    return Latency(one, per_image, throughput_batch, torch.get_num_threads(), str(device))
