"""A kinema cluster on one machine: one API process and worker processes on a PostgreSQL job store. Prints JSON lines.

    python benchmarks/bench_cluster.py --db postgresql://... [--model DIR] [--chaos] [--scaling 1,2,3]
                                       [--clients 100] [--jobs 30] [--steps 2]

- ``--chaos``: one ``kinema serve --workers 0`` and three ``kinema worker`` processes; ``--clients`` clients
  submit one small job each, all at once (every tenth one longer, so that workers are caught mid-job); two
  workers are killed with SIGKILL while they run a job, and one is started again. It reports how many jobs
  were accepted, completed, failed and lost, how many were completed more than once (from the workers'
  logs: a job is recorded completed only by its lease holder), the attempts of the jobs whose worker was
  killed, submission latency and time to completion (client side: from submission until the job is seen
  completed, polled every 0.25 s).
- ``--scaling 1,2,3``: for each count, that many workers (started and warm before the clock starts) run
  ``--jobs`` jobs submitted at once; jobs per minute from the first submission until the last completion.

``--db`` is a server URL: every run makes a database of its own there and drops it afterwards (the same
server ``tests/test_serve_cluster.py`` uses: ``scripts/postgres_cluster.sh start DIR`` starts one). Without
``--model`` a tiny random model is written to a temporary folder (a 1-block DiT, steps 2): the figures
measure the queue, the workers and the API, not a model. Every worker runs on one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

TOKEN = "cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COMPLETED = re.compile(r"job (video_[0-9a-f]{32}) completed in [0-9.]+ s by (\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new database on the PostgreSQL server at ``server``, dropped afterwards; yields its URL."""
    import psycopg

    name = f"kinema_cluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tiny_model(folder: Path) -> Path:
    """A randomly initialised pipeline folder (one DiT block, two sampling steps) that runs in a blink."""
    import torch

    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.dit import VideoDiT
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    dit = VideoDiT(num_layers=1, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, in_channels=4,
                   out_channels=4)
    pipe = KinemaPipeline(dit, VideoVAE.from_name("tiny", base_dim=8, z_dim=4))
    pipe.defaults.steps = 2
    pipe.save_pretrained(folder)
    return folder


@dataclass
class Cluster:
    """One API process and worker processes on one job store; every process logs to a file in ``folder``."""

    db: str
    folder: Path
    model: Path
    lease: float = 3.0
    port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def media(self) -> Path:
        return self.folder / "media"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log: Path, ranks: int = 1) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        launch = [sys.executable, "-m", "kinema.cli"]
        if ranks > 1:  # one worker on several ranks
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                      "-m", "kinema.cli"]
        with open(log, "a") as out:
            return subprocess.Popen([*launch, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)

    def start_api(self, max_queue: int = 1000, timeout: float = 180) -> None:
        self.media.mkdir(parents=True, exist_ok=True)
        self.api = self._spawn(["serve", "--db", self.db, "--media", str(self.media), "--workers", "0",
                                "--port", str(self.port), "--token", TOKEN, "--model", str(self.model),
                                "--max-queue", str(max_queue), "--lease-seconds", str(self.lease),
                                "--log-level", "warning"], self.folder / "api.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited with {self.api.returncode}: {self.log('api')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start in {timeout:g} s: {self.log('api')}")

    def start_worker(self, ready_timeout: float | None = None, ranks: int = 1) -> subprocess.Popen:
        """A new worker process (on ``ranks`` processes under torchrun); with ``ready_timeout``, wait until it has
        loaded the model and looks for jobs."""
        n = len(self.workers)
        process = self._spawn(["worker", "--db", self.db, "--media", str(self.media), "--model", str(self.model),
                               "--lease-seconds", str(self.lease), "--poll-seconds", "0.2"],
                              self.folder / f"worker-{n}.log", ranks)
        self.workers.append(process)
        if ready_timeout is not None:
            self.wait_ready(n, ready_timeout)
        return process

    def wait_ready(self, n: int, timeout: float = 300) -> None:
        """Wait until worker ``n`` has loaded the model and looks for jobs."""
        deadline = time.monotonic() + timeout
        while "running '" not in self.log(f"worker-{n}"):
            if self.workers[n].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {n} did not start: {self.log(f'worker-{n}')[-2000:]}")
            time.sleep(0.1)

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def completions(self) -> Counter:
        """How often each job was recorded completed, over every worker's log."""
        found: Counter = Counter()
        for path in self.folder.glob("worker-*.log"):
            found.update(match.group(1) for match in COMPLETED.finditer(path.read_text(errors="replace")))
        return found

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(30)


def submit_all(url: str, bodies: list[dict], clients: int) -> list[tuple[int, str | None, float]]:
    """Each body POSTed by its own client, ``clients`` at once: (status, job id or None, seconds) per body."""
    def submit(body: dict) -> tuple[int, str | None, float]:
        started = time.monotonic()
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            response = http.post("/v1/videos", json=body)
        elapsed = time.monotonic() - started
        return response.status_code, response.json().get("id") if response.status_code == 200 else None, elapsed

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(submit, bodies))


def wait_all(url: str, ids: list[str], timeout: float, on_poll=None) -> tuple[dict[str, dict], dict[str, float]]:
    """Poll the list of videos every 0.25 s until each of ``ids`` is completed or failed: (the Video objects by
    id, the monotonic time each was first seen finished). ``on_poll()`` runs between polls."""
    wanted, done, seen = set(ids), {}, {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        while time.monotonic() < deadline:
            after = None
            while True:  # every page, oldest first
                page = http.get("/v1/videos", params={"limit": 100, "order": "asc",
                                                       **({"after": after} if after else {})}).json()
                now = time.monotonic()
                for video in page["data"]:
                    if video["id"] in wanted and video["id"] not in done and video["status"] in ("completed",
                                                                                                  "failed"):
                        done[video["id"]], seen[video["id"]] = video, now
                if not page["has_more"]:
                    break
                after = page["last_id"]
            if len(done) == len(wanted):
                break
            if on_poll is not None:
                on_poll()
            time.sleep(0.25)
    return done, seen


def running_jobs(db: str) -> list[tuple[str, str, int]]:
    """(job id, worker, progress) of every running job, read from the store."""
    import psycopg

    with psycopg.connect(db, autocommit=True, connect_timeout=5) as connection:
        return connection.execute("SELECT id, worker, progress FROM jobs WHERE status = 'in_progress'").fetchall()


def pid_of(worker: str) -> int:
    return int(worker.split(":")[-2])  # host:pid:random (kinema.serve.worker.worker_name)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3)}


def job_body(n: int, steps: int, long_steps: int) -> dict:
    return {"prompt": f"a red ball {n}", "seconds": 0.5, "size": "32x32", "seed": n,
            "steps": long_steps if n % 10 == 0 else steps}


def chaos(db: str, folder: Path, model: Path, *, clients: int = 100, steps: int = 2, long_steps: int = 1000,
          timeout: float = 600.0) -> dict:
    """The chaos run of the module's docstring; returns its report."""
    cluster = Cluster(db, folder, model)
    try:
        cluster.start_api()
        for _ in range(3):
            cluster.start_worker()
        for n in range(3):  # loading side by side
            cluster.wait_ready(n)
        started = time.monotonic()
        answers = submit_all(cluster.url, [job_body(n, steps, long_steps) for n in range(clients)], clients)
        accepted = [job_id for status, job_id, _ in answers if status == 200]
        killed: list[tuple[str, str]] = []  # (worker, the job it was running)

        def kill_mid_job() -> None:
            """Between polls: kill a worker that is mid-job (its progress recorded), twice; then start one again."""
            if len(killed) >= 2:
                return
            for job_id, worker, progress in running_jobs(db):
                if progress > 0 and worker not in {w for w, _ in killed}:
                    os.kill(pid_of(worker), signal.SIGKILL)
                    killed.append((worker, job_id))
                    if len(killed) == 2:
                        cluster.start_worker()
                    return

        done, seen = wait_all(cluster.url, accepted, timeout, on_poll=kill_mid_job)
        wall = time.monotonic() - started
        completions = cluster.completions()
        with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=60) as http:
            listed = {job_id: http.get(f"/v1/videos/{job_id}").json() for job_id in accepted}
        statuses = Counter(video.get("status", "lost") for video in listed.values())
        submitted_at = {job_id: started + latency for status, job_id, latency in answers if status == 200}
        report = {
            "bench": "cluster_chaos", "clients": clients, "workers": 3, "killed": len(killed), "restarted": 1,
            "accepted": len(accepted), "refused": sum(status == 429 for status, _, _ in answers),
            "other_answers": sorted({status for status, _, _ in answers} - {200, 429}),
            "completed": statuses.get("completed", 0), "failed": statuses.get("failed", 0),
            "unfinished": len(accepted) - len(done), "lost": sum(1 for v in listed.values() if "id" not in v),
            "failed_without_message": sum(1 for v in listed.values()
                                          if v.get("status") == "failed" and not (v.get("error") or {}).get("message")),
            "completed_more_than_once": sum(1 for n in completions.values() if n > 1),
            "completed_never_logged": sum(1 for job_id, v in listed.items()
                                          if v.get("status") == "completed" and completions[job_id] == 0),
            "killed_jobs": {job_id: listed.get(job_id, {}).get("status") for _, job_id in killed},
            "killed_jobs_attempts": attempts(db, [job_id for _, job_id in killed]),
            "submit_latency_s": percentiles([latency for status, _, latency in answers if status == 200]),
            "time_to_completion_s": percentiles([seen[i] - submitted_at[i] for i in done if i in submitted_at]),
            "wall_s": round(wall, 2), "jobs_per_minute": round(60 * len(done) / wall, 1),
            "steps": steps, "long_steps": long_steps, "load_average": os.getloadavg()[0],
        }
        return report
    finally:
        cluster.stop()


def attempts(db: str, ids: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(db, autocommit=True, connect_timeout=5) as connection:
        rows = connection.execute("SELECT id, attempts FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    return dict(rows)


def scaling(db: str, folder: Path, model: Path, workers: int, *, jobs: int = 30, steps: int = 2,
            timeout: float = 600.0) -> dict:
    """``jobs`` jobs submitted at once to ``workers`` warm workers: jobs per minute."""
    cluster = Cluster(db, folder, model)
    try:
        cluster.start_api()
        for _ in range(workers):
            cluster.start_worker(ready_timeout=300)
        started = time.monotonic()
        answers = submit_all(cluster.url, [job_body(n + 1, steps, steps) for n in range(jobs)], min(jobs, 32))
        accepted = [job_id for status, job_id, _ in answers if status == 200]
        done, _ = wait_all(cluster.url, accepted, timeout)
        wall = time.monotonic() - started
        return {"bench": "cluster_scaling", "workers": workers, "jobs": jobs, "completed": len(done),
                "wall_s": round(wall, 2), "jobs_per_minute": round(60 * len(done) / wall, 1), "steps": steps,
                "load_average": os.getloadavg()[0]}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=os.environ.get("KINEMA_TEST_POSTGRES"),
                        help="a PostgreSQL server URL (default: $KINEMA_TEST_POSTGRES)")
    parser.add_argument("--model", type=Path, help="a pipeline folder (default: a tiny random one)")
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--scaling", default="", help="worker counts, e.g. 1,2,3")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if not args.db:
        parser.error("give --db postgresql://... (scripts/postgres_cluster.sh start DIR starts a server)")
    with tempfile.TemporaryDirectory() as temp:
        model = args.model or tiny_model(Path(temp) / "model")
        if args.chaos:
            with fresh_database(args.db) as db:
                print(json.dumps(chaos(db, Path(tempfile.mkdtemp(dir=temp)), model, clients=args.clients,
                                       steps=args.steps)), flush=True)
        for count in [int(n) for n in args.scaling.split(",") if n]:
            with fresh_database(args.db) as db:
                print(json.dumps(scaling(db, Path(tempfile.mkdtemp(dir=temp)), model, count, jobs=args.jobs,
                                         steps=args.steps)), flush=True)


if __name__ == "__main__":
    main()
