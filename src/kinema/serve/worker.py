"""The server's worker: one thread that runs queued jobs in order on the pipeline loaded at start-up.

Generation runs here, off the event loop. The sampler's callback reports progress (kept in memory:
a job interrupted by a crash starts again from the beginning) and is where a job stops early: when
it was deleted (cancel) or when the server is stopping (the job goes back to the queue). Outputs are
written by ``kinema.media`` to a temporary name and moved into place, and the job is marked
completed only after the video, thumbnail and spritesheet exist. Any failure inside a job, out of
memory included, marks that job failed with a one-line message and the worker goes on.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kinema.errors import KinemaError
from kinema.inference.generate import run
from kinema.media import contact_sheet, read_video, write_image
from kinema.serve.jobs import SPRITESHEET_NAME, THUMBNAIL_NAME, request_for
from kinema.serve.store import Job, JobStore

log = logging.getLogger("kinema.serve")
OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


class _Cancelled(Exception):
    """The job was deleted while it ran."""


class _Stopping(Exception):
    """The server is shutting down; the job goes back to the queue."""


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Worker:
    """Runs queued jobs one at a time, in submission order, on one loaded pipeline."""

    def __init__(self, store: JobStore, pipe: Any, media: Path) -> None:
        self.store = store
        self.pipe = pipe
        self.media = media
        self._thread = threading.Thread(target=self._loop, name="kinema-worker", daemon=True)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: str | None = None
        self._cancelled: set[str] = set()
        self._progress: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current sampler step; the running job is queued again."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def notify(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` if it is running now (its row is already deleted); False if it is not running."""
        with self._lock:
            if self._current != job_id:
                return False
            self._cancelled.add(job_id)
            return True

    def progress(self, job_id: str) -> int | None:
        """Percent done of a running job, or None."""
        return self._progress.get(job_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next()
            except Exception:
                log.exception("cannot read the job store; retrying in 1 s")
                self._stop.wait(1.0)
                continue
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception:  # the store failed while recording the outcome; the job is retried after a restart
                log.exception("job %s: cannot record its outcome", job.id)
                self._stop.wait(1.0)

    def _run(self, job: Job) -> None:
        folder = self.media / job.id
        with self._lock:
            self._current = job.id
        self._progress[job.id] = 0
        started = time.monotonic()
        try:
            self._generate(job, folder)
            if self.store.complete(job.id, folder.name + "/video.mp4"):
                log.info("job %s completed in %.1f s", job.id, time.monotonic() - started)
        except _Cancelled:
            log.info("job %s cancelled", job.id)
        except _Stopping:
            self.store.requeue(job.id)
            log.info("job %s queued again: the server is stopping", job.id)
        except KinemaError as error:
            self._fail(job, "invalid_request", one_line(error))
        except OUT_OF_MEMORY as error:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._fail(job, "out_of_memory", f"out of memory while generating ({one_line(error)}); "
                                             "ask for a smaller size, fewer seconds or fewer steps")
        except Exception as error:  # a job must never take the worker down
            log.exception("job %s failed", job.id)
            self._fail(job, "generation_failed", f"generation failed: {type(error).__name__}: {one_line(error)}")
        finally:
            with self._lock:
                self._current = None
                self._cancelled.discard(job.id)
            self._progress.pop(job.id, None)
        if self.store.get(job.id) is None:  # deleted while it ran: nothing of it stays
            shutil.rmtree(folder, ignore_errors=True)

    def _fail(self, job: Job, code: str, message: str) -> None:
        self.store.fail(job.id, code, message)
        log.warning("job %s failed: %s", job.id, message)

    def _generate(self, job: Job, folder: Path) -> None:
        request = request_for(job.params, folder)

        def progress(step: int, total: int, _latents: Any) -> None:
            if self._stop.is_set():
                raise _Stopping
            if job.id in self._cancelled:
                raise _Cancelled
            self._progress[job.id] = min(95, int(95 * step / max(total, 1)))

        written = run(self.pipe, request, progress)
        if job.id in self._cancelled:
            raise _Cancelled
        frames, _ = read_video(written)
        write_image(folder / THUMBNAIL_NAME, frames[len(frames) // 2], sidecar=False)
        sheet = contact_sheet(frames, columns=min(8, len(frames)), count=16, scale=1)
        write_image(folder / SPRITESHEET_NAME, sheet, sidecar=False)
