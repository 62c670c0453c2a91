"""Console lines while re-training: one per run started and one per epoch, on stderr."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console

from search.report.results import Epoch
from search.report.text import epochs as n_epochs

if TYPE_CHECKING:
    from search.report.retrain import Retraining


class RetrainProgress:
    """A line per epoch on stderr while re-training; ``quiet`` silences it (library use)."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.prefix = ""

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)

    def note(self, message: str) -> None:
        self.say(f"note: {message}")

    def run_started(self, task: Retraining, epochs: int) -> None:
        self.prefix = f"[{task.index}/{task.total}] trial {task.trial} seed {task.s}/{task.seeds}"
        self.say(
            f"{self.prefix}: re-training {task.n_params:,} params, {n_epochs(epochs)}, "
            f"seed {task.seed}"
        )

    def epoch_done(self, e: Epoch, epochs: int) -> None:
        self.say(
            f"{self.prefix} epoch {e.epoch}/{epochs}: train loss {e.train_loss:.4f} "
            f"acc {e.train_accuracy:.4f}  val loss {e.val_loss:.4f} "
            f"acc {e.val_accuracy:.4f}  {e.seconds:.0f}s"
        )


class SentProgress(RetrainProgress):
    """A worker process's progress: each line goes to ``send``; the parent prints it."""

    def __init__(self, send: Callable[[str], None], quiet: bool = False) -> None:
        super().__init__(quiet=quiet)
        self.send = send

    def say(self, message: str) -> None:
        if not self.quiet:
            self.send(message)
