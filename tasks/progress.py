"""Training progress while the fine-tune job runs: a poll's JobProgress in words, when to say it, and who listens.

Pure rules (fraction, ETA, wording, the rate of log lines) are tested without Prefect. Listeners are how the
terminal's progress bar (`tunegate run`, flows/cli.py) follows the job of a flow that runs in the same process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from workspaces.ports import JobProgress, JobRef

Listener = Callable[[JobRef, JobProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()

LOG_EVERY_S = 15.0  # a log line at most this often while the numbers move; state changes are said at once


def fraction(progress: JobProgress) -> float | None:
    """0..1 of the training steps done, when the workspace knows both numbers."""
    if progress.step is None or not progress.total_steps:
        return None
    return max(0.0, min(1.0, progress.step / progress.total_steps))


def eta_s(progress: JobProgress, now: float) -> float | None:
    """Seconds left at the pace so far (steps done per second of training), or None before there is a pace."""
    done = fraction(progress)
    if not done or progress.started is None or done >= 1.0:
        return 0.0 if done == 1.0 else None
    elapsed = max(0.0, now - progress.started)
    return elapsed * (1 - done) / done


def clock(seconds: float) -> str:
    """1:05, 12:30, 2:04:09"""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe(progress: JobProgress, now: float) -> str:
    """'training: step 12/30 (40%), epoch 1.20, train loss 2.3100, eval loss 2.4000, 0:14 elapsed, about 0:21 left'"""
    parts = []
    if progress.step is not None:
        done = fraction(progress)
        total = f"/{progress.total_steps}" if progress.total_steps else ""
        parts.append(f"step {progress.step}{total}" + (f" ({done:.0%})" if done is not None else ""))
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch:.2f}")
    if progress.train_loss is not None:
        parts.append(f"train loss {progress.train_loss:.4f}")
    if progress.eval_loss is not None:
        parts.append(f"eval loss {progress.eval_loss:.4f}")
    # a finished job's "elapsed" would count from its start to now: hours for a job an earlier run trained
    if progress.started is not None and not progress.state.terminal:
        parts.append(f"{clock(now - progress.started)} elapsed")
        left = eta_s(progress, now)
        if left is not None and left > 0:
            parts.append(f"about {clock(left)} left")
    head = progress.status_text or progress.state.value
    return f"{head}: {', '.join(parts)}" if parts else head


@dataclass
class LogPacer:
    """Says when a poll deserves a log line: the first, any change of state or status words, and otherwise a
    change of step or losses at most every `every_s` seconds (a 3-hour Azure job logs ~700 lines, not 10,000)."""

    every_s: float = LOG_EVERY_S
    _last_at: float | None = None
    _last_head: str | None = None
    _last_numbers: tuple = field(default_factory=tuple)

    def due(self, progress: JobProgress, now: float) -> bool:
        head = f"{progress.state.value}/{progress.status_text}"
        numbers = (progress.step, progress.epoch, progress.train_loss, progress.eval_loss)
        changed_head = head != self._last_head
        moved = numbers != self._last_numbers
        due = self._last_at is None or changed_head or (moved and now - self._last_at >= self.every_s)
        if due:
            self._last_at, self._last_head, self._last_numbers = now, head, numbers
        return due


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener(job, progress)` at every poll of any fine-tune job waited on in this process meanwhile."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def tell_listeners(job: JobRef, progress: JobProgress) -> None:
    with _lock:
        current = list(_listeners)
    for listener in current:
        listener(job, progress)
