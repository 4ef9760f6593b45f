"""The server's parts in one process: the job store, the worker (failures, cancel, stop), characters, uploads."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_bounded
from kinema.errors import KinemaError
from kinema.inference.pipeline import SamplingDefaults
from kinema.inference.request import Request
from kinema.media import write_video
from kinema.serve.characters import expand
from kinema.serve.database import open_job_store
from kinema.serve.jobs import request_for, stored_params
from kinema.serve.sql import SCHEMA
from kinema.serve.sqlite import SQLiteJobStore
from kinema.serve.store import MAX_ATTEMPTS, Character, JobStore, QueueFull
from kinema.serve.uploads import UploadError, check_declared_type, check_image, check_video
from kinema.serve.worker import Worker


def add(store: JobStore, media: Path, n: int, prompt: str = "a red ball", **fields) -> str:
    job_id = f"video_{n:032x}"
    folder = media / job_id
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"expand": False, **fields}  # FakePipe reacts to the words of the prompt it is given
    request = Request(prompt=prompt, output=str(folder / "video.mp4"), seconds=0.5, size="32x32", **fields)
    store.add(job_id, model="fake", prompt=prompt, seconds="0.5", size="32x32", params=stored_params(request, folder))
    return job_id


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> str:
    """Where a job store lives: a SQLite file, or a fresh PostgreSQL database (skipped where none is reachable)."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db):
    store = open_job_store(db)
    yield store
    store.close()


def test_sqlite_store_is_wal(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite")
    store.close()
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_sqlite_file_from_before_leases_gets_their_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:  # the first schema's jobs table, with one queued job
        connection.executescript(SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL").replace(
            "    worker TEXT,\n    lease_until REAL,\n    progress INTEGER NOT NULL DEFAULT 0\n", "").replace(
            "attempts INTEGER NOT NULL DEFAULT 0,", "attempts INTEGER NOT NULL DEFAULT 0"))
        connection.execute("INSERT INTO jobs (id, status, created_at, model, prompt, seconds, size, params) "
                           "VALUES ('video_1', 'queued', 0, 'm', 'p', '1', '8x8', '{}')")
    store = SQLiteJobStore(path)
    job = store.claim_next("w", 30)
    assert (job.id, job.worker, job.progress) == ("video_1", "w", 0) and job.lease_until > time.time()
    store.close()


def test_store_keeps_order_pages_and_limits(store, tmp_path):
    ids = [add(store, tmp_path, n) for n in range(5)]
    page, more = store.list(limit=2)
    assert [j.id for j in page] == [ids[4], ids[3]] and more
    page, more = store.list(after=ids[3], limit=10)
    assert [j.id for j in page] == ids[2::-1] and not more
    page, more = store.list(after=ids[1], limit=10, order="asc")
    assert [j.id for j in page] == ids[2:] and not more
    with pytest.raises(KinemaError, match="no such video"):
        store.list(after="video_" + "f" * 32)
    with pytest.raises(QueueFull, match="queue is full"):
        store.add("video_" + "e" * 32, model="m", prompt="p", seconds="1", size="8x8", params={}, max_queue=5)
    assert [store.claim_next("w", 30).id for _ in range(2)] == ids[:2]  # first in, first out
    assert store.counts() == {"queued": 3, "in_progress": 2, "completed": 0, "failed": 0}
    assert store.position(store.get(ids[4])) == 2
    assert store.delete(ids[0]).status == "in_progress" and store.get(ids[0]) is None
    assert store.ids() == set(ids[1:])


def test_only_the_lease_holder_records_a_job_and_a_lapsed_lease_is_taken_over(store, tmp_path):
    job_id = add(store, tmp_path, 1)
    first = store.claim_next("first", 0.3)
    assert (first.id, first.status, first.worker, first.attempts) == (job_id, "in_progress", "first", 1)
    assert store.claim_next("second", 30) is None  # held
    assert store.renew(job_id, "first", 0.3, 40) and store.get(job_id).progress == 40
    assert not store.renew(job_id, "second", 30, 50)
    time.sleep(0.5)  # the first worker stops renewing: its lease runs out
    second = store.claim_next("second", 30)
    assert (second.id, second.worker, second.attempts, second.progress) == (job_id, "second", 2, 0)
    assert not store.renew(job_id, "first", 30, 90)  # the first worker learns that it lost the job
    assert not store.complete(job_id, "first", "x/video.mp4") and not store.fail(job_id, "first", "c", "m")
    assert not store.requeue(job_id, "first")
    assert store.complete(job_id, "second", f"{job_id}/video.mp4")
    job = store.get(job_id)
    assert (job.status, job.output, job.progress, job.attempts) == ("completed", f"{job_id}/video.mp4", 100, 2)
    assert not store.complete(job_id, "second", "again")  # completed once


def test_a_job_whose_worker_keeps_vanishing_fails_after_max_attempts(store, tmp_path):
    job_id = add(store, tmp_path, 1)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = store.claim_next(f"worker-{attempt}", 0.1)
        assert claimed.id == job_id and claimed.attempts == attempt
        time.sleep(0.2)
    assert store.claim_next("last", 30) is None  # the lapsed third lease fails the job instead
    job = store.get(job_id)
    assert job.status == "failed" and job.error["code"] == "worker_lost" and "not retried" in job.error["message"]


def test_a_starting_server_takes_back_running_jobs_whose_worker_is_gone(store, db, tmp_path):
    """SQLite: one server process uses the file, so every running job it finds was interrupted. PostgreSQL: workers
    elsewhere may hold jobs, so only those whose lease ran out are."""
    held, lapsed = add(store, tmp_path, 1), add(store, tmp_path, 2)
    assert store.claim_next("alive", 60).id == held
    assert store.claim_next("gone", 0.1).id == lapsed
    time.sleep(0.2)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        reopened = open_job_store(db)  # as after a crash: a new process opens the same store
        requeued, failed = reopened.recover()
        reopened.close()
        if store.shared:
            assert (requeued, failed) == ((1, 0) if attempt == 1 else (0, 0))
            assert store.get(held).status == "in_progress" and store.get(lapsed).status == "queued"
            return
        assert (requeued, failed) == ((2, 0) if attempt < MAX_ATTEMPTS else (0, 2))
        if attempt < MAX_ATTEMPTS:
            assert {store.claim_next("w", 60).id for _ in range(2)} == {held, lapsed}
    assert store.get(held).status == store.get(lapsed).status == "failed"


def test_workers_on_separate_connections_never_claim_the_same_job(store, db, tmp_path):
    ids = {add(store, tmp_path, n) for n in range(40)}
    stores = [open_job_store(db) for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in stores]

    def drain(n: int) -> None:
        while (job := stores[n].claim_next(f"worker-{n}", 30)) is not None:
            claimed[n].append(job.id)

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(drain, range(len(stores))))
    for opened in stores:
        opened.close()
    everyone = [job_id for ids_of_one in claimed for job_id in ids_of_one]
    assert sorted(everyone) == sorted(ids)  # each job once, none lost
    assert store.counts()["in_progress"] == 40


def test_the_queue_limit_holds_across_connections(store, db):
    stores = [open_job_store(db) for _ in range(4)]

    def submit(n: int) -> bool:
        try:
            stores[n % 4].add(f"video_{n:032x}", model="m", prompt="p", seconds="1", size="8x8", params={},
                              max_queue=10)
        except QueueFull:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        accepted = sum(pool.map(submit, range(40)))
    for opened in stores:
        opened.close()
    assert accepted == 10 and store.counts()["queued"] == 10


def test_characters_are_unique_by_name_ignoring_case(store):
    store.add_character(character("Rex", "a small red ball"))
    with pytest.raises(KinemaError, match="a character of that name exists"):
        store.add_character(Character("char_other", "REX", 1, "a blue box", {}, "reference.png"))
    assert [c.name for c in store.characters()] == ["Rex"] and store.get_character("char_Rex").subject == {}
    assert "char_Rex" in store.ids()


def test_a_bad_job_database_is_a_one_line_error(tmp_path):
    with pytest.raises(KinemaError, match="cannot open the job database"):
        open_job_store(str(tmp_path))  # a folder
    with pytest.raises(KinemaError, match=r"cannot be reached") as unreachable:
        open_job_store("postgresql://kinema:secret@127.0.0.1:1/jobs?connect_timeout=2")
    assert "secret" not in str(unreachable.value) and "\n" not in str(unreachable.value)
    with pytest.raises(KinemaError, match="job database URL"):
        open_job_store("postgresql://host/db?nonsense_option=1")


def test_stored_params_round_trip_inside_the_job_folder(tmp_path):
    folder = tmp_path / "video_x"
    request = Request(prompt="a", output=str(folder / "video.mp4"), edit=str(folder / "source.mp4"), strength=0.5,
                      connect=[], seed=3)
    params = stored_params(request, folder)
    assert params["edit"] == "source.mp4" and "output" not in params
    moved = tmp_path / "elsewhere"
    again = request_for(params, moved)
    assert again.edit == str(moved / "source.mp4") and again.output == str(moved / "video.mp4")
    assert again.seed == 3 and again.strength == 0.5


class FakePipe:
    """Enough of KinemaPipeline for kinema.inference.generate.run: fails on 'hog' and 'kaput', sleeps on 'slow'."""

    name = "fake"
    weights_sha256 = "0" * 64

    def __init__(self) -> None:
        self.defaults = SamplingDefaults(steps=3)
        self.vae = SimpleNamespace(temporal_compression=4, spatial_compression=8)

    def loras(self, specs):
        assert not specs  # these jobs name no LoRA
        return contextlib.nullcontext()

    def __call__(self, prompt, num_frames, height, width, num_inference_steps=None, callback=None, **_):
        if "hog" in prompt:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if "kaput" in prompt:
            raise RuntimeError("an unexpected failure")
        steps = num_inference_steps or self.defaults.steps
        for step in range(1, steps + 1):
            if "slow" in prompt:
                time.sleep(0.02)
            if callback is not None:
                callback(step, steps, None)
        return SimpleNamespace(frames=np.full((1, num_frames, height, width, 3), 90, np.uint8), prompts=[prompt],
                               expanded_prompts=[None], settings={"steps": steps, "guidance": 4.0, "sampler": "euler"})


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_failing_job_fails_alone_and_the_worker_goes_on(store, tmp_path):
    media = tmp_path / "media"
    ids = [add(store, media, n, prompt) for n, prompt in enumerate(["a memory hog", "a kaput box", "a red ball"])]
    worker = Worker(store, FakePipe(), media)
    worker.start()
    try:
        wait_for(lambda: all(store.get(i).status in ("completed", "failed") for i in ids))
    finally:
        worker.stop()
    hog, kaput, fine = (store.get(i) for i in ids)
    assert hog.status == "failed" and hog.error["code"] == "out_of_memory" and "smaller size" in hog.error["message"]
    assert kaput.status == "failed" and kaput.error["code"] == "generation_failed"
    assert "RuntimeError: an unexpected failure" in kaput.error["message"]
    assert fine.status == "completed" and fine.output == f"{fine.id}/video.mp4"
    for name in ("video.mp4", "video.json", "thumbnail.png", "spritesheet.png"):
        assert (media / fine.id / name).is_file()


def test_cancel_stops_a_running_job_and_stop_requeues_one(store, tmp_path):
    media = tmp_path / "media"
    cancelled = add(store, media, 1, "a slow red ball", steps=500)
    stopped = add(store, media, 2, "a slow blue ball", steps=500)
    worker = Worker(store, FakePipe(), media)
    worker.start()
    try:
        wait_for(lambda: (worker.progress(cancelled) or 0) > 0)
        assert store.delete(cancelled).status == "in_progress" and worker.cancel(cancelled)
        wait_for(lambda: not (media / cancelled).exists())
        wait_for(lambda: (worker.progress(stopped) or 0) > 0)
        assert not worker.cancel(cancelled)  # no longer running
    finally:
        worker.stop()
    assert store.get(cancelled) is None
    job = store.get(stopped)
    assert job.status == "queued" and job.attempts == 0  # a clean stop does not count as an attempt


def test_progress_and_cancellation_travel_through_the_store(store, db, tmp_path):
    """A worker elsewhere: another connection to the store sees its progress, and deleting the job there stops it
    at the worker's next lease renewal."""
    media = tmp_path / "media"
    job_id = add(store, media, 1, "a slow red ball", steps=1000)
    after = add(store, media, 2, "a blue box")
    worker = Worker(store, FakePipe(), media, lease=5, beat=0.05)
    api = open_job_store(db)  # the API's own connection, as in another process
    worker.start()
    try:
        wait_for(lambda: api.get(job_id).progress > 0)
        running = api.get(job_id)
        assert running.status == "in_progress" and running.worker == worker.name
        assert api.delete(job_id).status == "in_progress"  # no call into the worker: only the store changed
        wait_for(lambda: not (media / job_id).exists())
        wait_for(lambda: api.get(after).status == "completed")  # the worker went on
    finally:
        worker.stop()
        api.close()


def test_a_worker_that_lost_its_lease_stops_and_leaves_the_job_to_its_holder(store, tmp_path):
    media = tmp_path / "media"
    job_id = add(store, media, 1, "a slow red ball", steps=1000)
    worker = Worker(store, FakePipe(), media, lease=5, beat=0.05)
    worker.start()
    try:
        wait_for(lambda: (worker.progress(job_id) or 0) > 0)
        # As if its lease had run out while it stalled, and another worker took the job over.
        assert store.requeue(job_id, worker.name) and store.claim_next("other", 60).id == job_id
        wait_for(lambda: worker.progress(job_id) is None)
    finally:
        worker.stop()
    job = store.get(job_id)
    assert (job.status, job.worker) == ("in_progress", "other") and (media / job_id).is_dir()


def character(name: str, description: str) -> Character:
    return Character(f"char_{name}", name, 0, description, {}, "reference.png")


@pytest.mark.parametrize("prompt, expected", [
    ("Rex bounces", "a small red ball bounces"),
    ("the Rex bounces", "a small red ball bounces"),
    ("a @rex bounces near Big Rex", "a small red ball bounces near a large blue box"),
    ("Rexford bounces", "Rexford bounces"),
    ("T-Rex roars", "T-Rex roars"),
])
def test_prompts_that_name_a_character_get_its_description(prompt, expected):
    characters = [character("Rex", "a small red ball"), character("Big Rex", "a large blue box")]
    expanded, used = expand(prompt, characters)
    assert expanded == expected
    assert bool(used) == (expanded != prompt)


def test_uploads_are_checked_before_they_are_decoded(tmp_path):
    from PIL import Image

    with pytest.raises(UploadError) as declared:
        check_declared_type("text/html", "input_reference", "image")
    assert declared.value.status == 415
    assert check_declared_type("application/octet-stream", "video", "video") == "application/octet-stream"

    big = tmp_path / "big.png"
    Image.new("1", (6000, 5000)).save(big)
    with pytest.raises(UploadError, match="30,000,000 pixels") as too_big:
        check_image(big, "input_reference", max_pixels=4096 * 4096)
    assert too_big.value.status == 413

    frames = np.zeros((40, 64, 64, 3), np.uint8)
    clip = write_video(tmp_path / "clip.mp4", frames, 8, sidecar=False)
    with pytest.raises(UploadError, match="at most 24 frames") as too_long:
        check_video(clip, "video", max_pixels=4096 * 4096, max_video_pixels=24 * 64 * 64)
    assert too_long.value.status == 413
    decoded, fps = check_video(clip, "video", max_pixels=4096 * 4096, max_video_pixels=40 * 64 * 64)
    assert decoded.shape == (40, 64, 64, 3) and fps == pytest.approx(8.0)


def test_serve_refuses_a_network_address_without_a_token():
    from kinema.serve.guard import check_host

    env = {k: v for k, v in os.environ.items() if k != "KINEMA_TOKEN"}
    result = run_bounded([sys.executable, "-m", "kinema.cli", "serve", "--host", "0.0.0.0"], timeout=120, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0") and "--token" in lines[0]
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_host(host, None)
    check_host("0.0.0.0", "a-token")
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(KinemaError, match="--token"):
            check_host(host, None)


def test_one_server_per_database_and_per_port(tmp_path):
    from kinema.serve.app import _listen, _lock_database

    held = _lock_database(tmp_path / "jobs.sqlite")
    try:
        with pytest.raises(KinemaError, match="another kinema server"):
            _lock_database(tmp_path / "jobs.sqlite")
    finally:
        held.close()
    _lock_database(tmp_path / "jobs.sqlite").close()  # free again once the holder is gone
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(KinemaError, match=r"cannot listen on 127\.0\.0\.1"):
            _listen("127.0.0.1", busy.getsockname()[1])
