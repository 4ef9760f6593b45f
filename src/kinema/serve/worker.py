"""A worker: one thread that runs queued jobs in order on a loaded pipeline, inside a server (``kinema serve``) or
in a process of its own (``kinema worker``) beside any number of others on the same job store.

A worker claims the oldest queued job under a lease (``kinema.serve.store``), and a second thread renews the
lease every ``beat`` seconds while the job runs, recording its progress in the store; so a worker that is
killed, or whose machine vanishes, loses nothing: its lease runs out and another worker runs the job from the
beginning. The sampler's callback is where a job stops early: when it was deleted (cancelled: the renewal
finds it gone, or the server in the same process says so) or when the worker is stopping (the job goes back
to the queue). Outputs are written by ``kinema.media`` to a temporary name and moved into place, in the job's
folder of the media folder that the server and every worker share, and the job is marked completed only after
the video, thumbnail and spritesheet exist. Any failure inside a job, out of memory included, marks that job
failed with a one-line message and the worker goes on.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch

from kinema.errors import KinemaError
from kinema.inference.generate import run
from kinema.media import contact_sheet, read_video, write_image
from kinema.serve.jobs import SPRITESHEET_NAME, THUMBNAIL_NAME, request_for
from kinema.serve.ranks import CANCEL, GO, STOP, RankChannel
from kinema.serve.store import Job, JobStore

log = logging.getLogger("kinema.serve")
OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
LEASE_SECONDS = 30.0  # how long a job waits for its worker before another takes it, once that worker is gone
BEAT_SECONDS = 1.0  # how often a running job's lease is renewed and its progress recorded (at most)
POLL_SECONDS = 1.0  # how often an idle worker looks for a job (a server's own worker is also woken at once)


def log_to_stderr(level: str) -> None:
    """kinema's log lines on stderr, for a server or a worker process."""
    logger = logging.getLogger("kinema")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def worker_name() -> str:
    """A name no other worker has, that says where this one runs: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Cancelled(Exception):
    """The job was deleted while it ran."""


class _Stopping(Exception):
    """The server is shutting down; the job goes back to the queue."""


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Worker:
    """Runs queued jobs one at a time, in submission order, on one loaded pipeline.

    ``lease``: seconds a claim lasts without renewal; ``beat``: seconds between renewals (default: a third of
    the lease, at most BEAT_SECONDS); ``poll``: seconds between looks for a job while the queue is empty."""

    def __init__(self, store: JobStore, pipe: Any, media: Path, *, name: str | None = None,
                 lease: float = LEASE_SECONDS, beat: float | None = None, poll: float = POLL_SECONDS,
                 ranks: RankChannel | None = None) -> None:
        self.store = store
        self.ranks = ranks  # under torchrun: the other ranks, which make each video with this one
        self.pipe = pipe
        self.media = media
        self.name = name or worker_name()
        self.lease = lease
        self.beat = beat if beat is not None else min(BEAT_SECONDS, lease / 3)
        self.poll = poll
        self._thread = threading.Thread(target=self._loop, name="kinema-worker", daemon=True)
        self._renewer = threading.Thread(target=self._renew_loop, name="kinema-lease", daemon=True)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()  # the job loop has ended
        self._lock = threading.Lock()
        self._current: str | None = None
        self._cancelled: set[str] = set()
        self._progress: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()
        self._renewer.start()

    def stop(self, timeout: float = 30.0, wait: bool = True) -> None:
        """Stop after the current sampler step; the running job is queued again. ``wait``: until it has stopped
        (False: only ask, as a signal handler does)."""
        self._stop.set()
        self._wake.set()
        if not wait:
            return
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._renewer.is_alive():
            self._renewer.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker has stopped."""
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
        try:
            self._claim_and_run()
        finally:
            if self.ranks is not None:
                self.ranks.send({"stop": True})
            self._done.set()

    def _claim_and_run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next(self.name, self.lease)
            except Exception as error:
                log.warning("cannot claim a job (%s); retrying in %g s", one_line(error), self.poll)
                self._stop.wait(self.poll)
                continue
            if job is None:
                if self.ranks is not None:  # keep the other ranks' wait shorter than a collective's timeout
                    self.ranks.send({"idle": True})
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception as error:  # the store failed while recording the outcome: the lease runs out, and
                log.warning("job %s: cannot record its outcome (%s)", job.id, one_line(error))  # it runs again
                self._stop.wait(self.poll)

    def _renew_loop(self) -> None:
        """Renew the running job's lease and record its progress every ``beat`` seconds; a job that is gone from
        the store, or no longer this worker's, is stopped at the sampler's next step."""
        while not self._done.wait(self.beat):
            job_id = self._current
            if job_id is None:
                continue
            try:
                held = self.store.renew(job_id, self.name, self.lease, self._progress.get(job_id, 0))
            except Exception as error:  # the store is out of reach: keep working, the lease may still hold
                log.warning("job %s: cannot renew its lease (%s)", job_id, one_line(error))
                continue
            if not held:
                with self._lock:
                    if self._current == job_id:
                        self._cancelled.add(job_id)

    def _run(self, job: Job) -> None:
        folder = self.media / job.id
        with self._lock:
            self._current = job.id
        self._progress[job.id] = 0
        started = time.monotonic()
        try:
            self._generate(job, folder)
        except _Cancelled:
            log.info("job %s stopped: it was deleted, or another worker holds it now", job.id)
        except _Stopping:
            self.store.requeue(job.id, self.name)
            log.info("job %s queued again: the worker is stopping", job.id)
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
        else:  # outside the handlers above: a store that cannot record it is the loop's to retry, not a failed job
            if self.store.complete(job.id, self.name, folder.name + "/video.mp4"):
                log.info("job %s completed in %.1f s by %s", job.id, time.monotonic() - started, self.name)
            else:
                log.info("job %s finished, but it was deleted or another worker holds it now", job.id)
        finally:
            with self._lock:
                self._current = None
                self._cancelled.discard(job.id)
            self._progress.pop(job.id, None)
        if self.store.get(job.id) is None:  # deleted while it ran: nothing of it stays
            shutil.rmtree(folder, ignore_errors=True)

    def _fail(self, job: Job, code: str, message: str) -> None:
        self.store.fail(job.id, self.name, code, message)
        log.warning("job %s failed: %s", job.id, message)

    def _generate(self, job: Job, folder: Path) -> None:
        request = request_for(job.params, folder)
        if self.ranks is not None:
            self.ranks.send({"job": job.id, "params": job.params})

        def progress(step: int, total: int, _latents: Any) -> None:
            word = STOP if self._stop.is_set() else CANCEL if job.id in self._cancelled else GO
            if self.ranks is not None:
                self.ranks.verdict(word)  # every rank stops at the same step
            if word == STOP:
                raise _Stopping
            if word == CANCEL:
                raise _Cancelled
            self._progress[job.id] = min(95, int(95 * step / max(total, 1)))

        written = run(self.pipe, request, progress)
        if job.id in self._cancelled:
            raise _Cancelled
        frames, _ = read_video(written)
        write_image(folder / THUMBNAIL_NAME, frames[len(frames) // 2], sidecar=False)
        sheet = contact_sheet(frames, columns=min(8, len(frames)), count=16, scale=1)
        write_image(folder / SPRITESHEET_NAME, sheet, sidecar=False)


def run_worker(store: JobStore, pipe: Any, media: Path, *, lease: float = LEASE_SECONDS,
               poll: float = POLL_SECONDS, ranks: RankChannel | None = None) -> None:
    """``kinema worker``: run jobs from a shared store until SIGINT or SIGTERM, which stop it after the running
    job's current step (that job goes back to the queue). SIGKILL loses nothing either: the lease runs out.
    ``ranks``: under torchrun, on rank 0, the other ranks (``kinema.serve.ranks.follow``)."""
    import signal

    worker = Worker(store, pipe, media, lease=lease, poll=poll, ranks=ranks)

    def stop(signum: int, _frame: Any) -> None:
        log.info("worker %s stopping (%s)", worker.name, signal.Signals(signum).name)
        worker.stop(wait=False)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    log.info("worker %s running '%s' on the jobs of %s, media in %s", worker.name, pipe.name,
             getattr(store, "shown", "the job store"), media)
    worker.start()
    try:
        while worker.alive:
            worker.join(0.5)
        worker.stop()  # the lease thread too
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
