"""What a long command shows while it works: one line while the model loads, then one bar per output over sampling,
decoding and writing that stays on screen when done; plain log lines instead where standard error is not a terminal
(logs, CI, a service). Notes from the pipeline (``kinema.inference``'s log: the expanded prompt, warnings) print
above the bar."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

LOG_EVERY = 0.25  # without a terminal: a sampling line every quarter of the steps


class Printer:
    """Lines on standard error that do not break a running bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)
        self.stream.flush()


class PipelineLog(logging.Handler):
    """kinema's log as plain lines through a Printer: info as it is, warnings as 'warning: ...'."""

    def __init__(self, printer: Printer) -> None:
        super().__init__(logging.INFO)
        self.printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        try:
            self.printer.line(prefix + record.getMessage())
        except Exception:
            self.handleError(record)


def show_pipeline_log(printer: Printer) -> None:
    """Route ``kinema.inference``'s log (expansions, warnings) to ``printer``, once."""
    logger = logging.getLogger("kinema.inference")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, PipelineLog)] + [PipelineLog(printer)]
    logger.setLevel(logging.INFO)
    logger.propagate = False


class Generation:
    """The progress of one output: ``update(done, total, latents)`` as ``kinema.inference.generate.run`` reports it
    (sampling steps, then decoding, then writing: ``done == total``)."""

    def __init__(self, name: str, printer: Printer) -> None:
        self.name, self.printer = name, printer
        self.started = time.monotonic()
        self.bar: Any = None
        self.phase = ""
        self.logged = 0.0

    def phase_of(self, done: int, total: int) -> str:
        if done >= total:
            return "done"
        return "writing" if done == total - 1 else "decoding" if done == total - 2 else "sampling"

    def update(self, done: int, total: int, _latents: Any = None) -> None:
        phase = self.phase_of(done, total)
        if self.printer.tty:
            self.draw(done, total, phase)
        elif phase != self.phase or (phase == "sampling" and done >= self.logged + LOG_EVERY * (total - 2)):
            steps = f" {done}/{total - 2} steps" if phase == "sampling" else ""
            if phase != "done":
                self.printer.line(f"{self.name}: {phase}{steps}")
            self.logged = done
        self.phase = phase

    def draw(self, done: int, total: int, phase: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=f"{self.name}: {phase}", unit="step", leave=True,
                            file=self.printer.stream, dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
        self.bar.total = total
        if phase != self.phase:
            self.bar.set_description_str(f"{self.name}: {phase}", refresh=False)
        self.bar.update(done - self.bar.n)
        if phase != self.phase:  # a new phase shows at once, whatever tqdm's refresh interval
            self.bar.refresh()

    def close(self) -> float:
        """End the bar (it stays on screen); the seconds the output took."""
        if self.bar is not None:
            self.bar.close()
        return time.monotonic() - self.started
