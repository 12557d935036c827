"""The terminal's training bar for `tunegate run`, with log lines printed above it."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

from rich.text import Text

if TYPE_CHECKING:
    pass

from flows.cli.common import (
    err,
)


class AboveTheBar(io.TextIOBase):
    """A stream whose lines are printed through a live display's console, so they appear above the display.
    (rich's own FileProxy unwraps itself when set as another console's file.)"""

    def __init__(self, console, original) -> None:
        self.console, self.original, self.pending = console, original, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()


def bar_columns() -> list:
    """Step, percent and time left first, at fixed widths, and a short bar: at 80 columns they all still show and
    only the losses' words are cut (the job's name is printed once above the bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
    from rich.table import Column

    def fixed() -> Column:
        return Column(no_wrap=True)

    return [
        TextColumn("fine-tune", table_column=fixed()),
        BarColumn(bar_width=BAR_WIDTH, table_column=fixed()),
        MofNCompleteColumn(table_column=fixed()),
        TaskProgressColumn(table_column=fixed()),
        TimeRemainingColumn(table_column=fixed()),
        TextColumn("{task.fields[words]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
    ]


BAR_WIDTH, BESIDE_WORDS = 16, 52  # the columns before the words take about 52 characters with 4-digit step counts


def fit_words(words: str, width: int) -> str:
    """The losses' words cut to what is left of a line `width` wide, with an ellipsis."""
    room = max(8, width - BESIDE_WORDS)
    return words if len(words) <= room else words[: room - 1] + "…"


class TrainingBar:
    """One progress bar on stderr for the fine-tune job while the flow waits for it (tasks/progress listeners):
    steps done of all, the latest losses, time left. It appears at the first poll and stays, finished, after."""

    def __init__(self) -> None:
        self.bar: Any = None  # a rich Progress while shown
        self.task: Any = None
        self.rerouted: list = []  # (a log handler's console, the stream it had) while the bar shows

    def show(self, job, progress) -> None:
        from rich.progress import Progress

        from tasks.progress import describe

        if self.bar is None:
            err.print(f"fine-tune job {job.name}", markup=False, soft_wrap=True, style="bold")
            self.bar = Progress(*bar_columns(), console=err)
            self.bar.start()
            self._route_prefect_logs_through(self.bar.console)
            self.task = self.bar.add_task("fine-tune", total=progress.total_steps, job=job.name, words="")
        losses = describe(progress.model_copy(update={"step": None, "started": None}), time.time())
        total = progress.total_steps or None
        done = progress.total_steps if progress.state.value == "completed" and total else progress.step or 0
        self.bar.update(self.task, total=total, completed=done, words=fit_words(losses, err.width))
        if progress.state.terminal:
            self.close()

    def _route_prefect_logs_through(self, console) -> None:
        """Prefect's console log lines go through the bar's console while it shows, so each is printed above the
        bar instead of being glued to it (Prefect's handlers write to the stream they were given at start)."""
        import logging

        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", []):
                handler_console = getattr(handler, "console", None)
                if handler_console is not None and handler_console is not console:
                    self.rerouted.append((handler_console, handler_console.file))
                    handler_console.file = AboveTheBar(console, handler_console.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        for handler_console, file in self.rerouted:
            handler_console.file = file
        self.rerouted = []

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
