"""Live progress of a study: a line per finished trial, and a status line while one runs."""

from __future__ import annotations

import time
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.text import Text

from search.studies import best_accuracy, count_states


class Progress:
    """Prints to stderr; ``quiet`` silences everything (library use, tests)."""

    def __init__(
        self,
        quiet: bool = False,
        console: Console | None = None,
        prefix: str = "",
        live: bool = True,
    ) -> None:
        self.quiet = quiet
        self.prefix = prefix  # e.g. "[worker 1] " when several workers share a terminal
        self.allow_live = live
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.live: Live | None = None
        self.target = 0
        self.counts: dict[str, int] = {}
        self.best_acc: float | None = None
        self.running = ""
        self.started = time.monotonic()

    def _status(self) -> Text:
        c = self.counts
        done = c.get("complete", 0) + c.get("pruned", 0)
        best = f"{self.best_acc:.4f}" if self.best_acc is not None else "-"
        elapsed = time.monotonic() - self.started
        return Text(
            f"trials {done}/{self.target}  complete {c.get('complete', 0)}  "
            f"pruned {c.get('pruned', 0)}  failed {c.get('fail', 0)}  best val acc {best}  "
            f"{elapsed / 60:.1f} min  {self.running}"
        )

    def _refresh_counts(self, study: Any) -> None:
        self.counts = count_states(study)
        self.best_acc = best_accuracy(study)

    def start(self, study: Any, target: int, device: str, storage: str) -> None:
        self.target = target
        self.started = time.monotonic()
        self._refresh_counts(study)
        if self.quiet:
            return
        self.console.print(
            f"{self.prefix}study {study.study_name!r} on {storage}, device {device}: "
            f"running until {target} finished trials",
            markup=False,
            highlight=False,
        )
        if self.console.is_terminal and self.allow_live:
            self.live = Live(self._status(), console=self.console, refresh_per_second=2)
            self.live.start()

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(self.prefix + message, markup=False, highlight=False)

    def heartbeat_lost(self, exc: Exception) -> None:
        """Called from the heartbeat thread: one line, not a traceback; the main loop stops with
        the storage error at its next database call."""
        self.console.print(
            f"{self.prefix}warning: trial heartbeat lost the storage connection",
            markup=False,
            highlight=False,
        )

    def trial_started(self, number: int, n_params: int, epochs: int) -> None:
        self.running = f"| trial {number} ({n_params:,} params) starting"
        self._update()

    def epoch_done(self, number: int, epoch: float, epochs: int, m: dict[str, float]) -> None:
        self.running = (
            f"| trial {number} epoch {epoch:g}/{epochs} val loss {m['val_loss']:.4f} "
            f"acc {m['val_accuracy']:.4f}"
        )
        self._update()

    def trial_done(self, study: Any, t: FrozenTrial) -> None:
        self._refresh_counts(study)
        self.running = ""
        if not self.quiet:
            a = t.user_attrs
            line = f"{self.prefix}trial {t.number:>3} {t.state.name.lower():<8}"
            if a.get("val_accuracy") is not None:
                line += (
                    f" val loss {a['history'][-1]['val_loss']:.4f} acc {a['val_accuracy']:.4f}"
                    f" after {a.get('epochs_run', 0):g} epochs, {a.get('seconds', 0):.0f}s"
                )
            reason = a.get("fail_reason") if t.state == TrialState.FAIL else a.get("pruned_reason")
            if reason and t.state != TrialState.COMPLETE:
                line += f" ({reason})"
            if a.get("warm_start"):
                line += f" [warm start {a['warm_start']}]"
            if a.get("survey_best") is not None:
                line += f" [the survey's best, trial {a['survey_best']}, again]"
            self.console.print(line, highlight=False, markup=False)
            if self.live is None:
                self.console.print(
                    self.prefix + self._status().plain, highlight=False, markup=False
                )
        self._update()

    def _update(self) -> None:
        if self.live is not None:
            self.live.update(self._status())

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
