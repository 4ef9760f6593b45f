"""kinema beyond one process: an API process and worker processes on a PostgreSQL job store, killed with SIGKILL
while they work; and the command line's checks of the store options.

The cluster runs benchmarks/bench_cluster.py's harness, so that the test and the figures in benchmarks/RESULTS.md
come from the same code. It needs a PostgreSQL server ($KINEMA_TEST_POSTGRES; skipped without one, except in CI).
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import bench_module, run_bounded


@pytest.mark.timeout(900)  # four processes start and load a model: minutes on a busy 2-core machine
def test_chaos_100_clients_3_workers_two_killed_mid_job_lose_nothing(postgres_url, tmp_path):
    """One API process and three workers; 100 clients submit at once; two workers are SIGKILLed while they run a job
    and one is started again. Every accepted job completes (or fails with a message), none is completed twice,
    none is lost, and the jobs of the killed workers are run again by others."""
    cluster = bench_module("cluster")
    model = cluster.tiny_model(tmp_path / "model")
    report = cluster.chaos(postgres_url, tmp_path / "cluster", model, clients=100, timeout=400)
    print(report)  # the figures, for the record (-s shows them)
    assert report["killed"] == 2, report
    assert report["accepted"] + report["refused"] == 100 and not report["other_answers"], report
    assert report["accepted"] == 100, report  # the queue limit is far above 100
    assert report["unfinished"] == 0 and report["lost"] == 0, report
    assert report["completed"] + report["failed"] == report["accepted"], report
    assert report["failed_without_message"] == 0, report
    assert report["completed_more_than_once"] == 0 and report["completed_never_logged"] == 0, report
    # The killed workers' jobs ran again elsewhere after their lease ran out.
    assert set(report["killed_jobs"].values()) == {"completed"}, report
    assert all(n >= 2 for n in report["killed_jobs_attempts"].values()), report


@pytest.mark.timeout(900)
def test_a_worker_on_two_ranks_runs_cancels_and_stops_jobs(postgres_url, tmp_path):
    """`torchrun --nproc_per_node 2 -m kinema worker`: both ranks make each video (rank 0 holds the lease and
    writes); a job deleted while it runs stops on both ranks and the worker goes on; SIGTERM ends it cleanly."""
    import signal
    import time

    import httpx

    harness = bench_module("cluster")
    cluster = harness.Cluster(postgres_url, tmp_path / "cluster", harness.tiny_model(tmp_path / "model"))
    try:
        cluster.start_api()
        worker = cluster.start_worker(ready_timeout=300, ranks=2)
        with httpx.Client(base_url=cluster.url, headers=harness.AUTH, timeout=60) as http:
            slow = http.post("/v1/videos", json={**harness.job_body(0, 2, 1000), "size": "48x80"}).json()["id"]
            quick = [http.post("/v1/videos", json=harness.job_body(n, 2, 2)).json()["id"] for n in (1, 2)]
            deadline = time.monotonic() + 120
            while http.get(f"/v1/videos/{slow}").json()["progress"] == 0:
                assert time.monotonic() < deadline, cluster.log("worker-0")[-3000:]
                time.sleep(0.1)
            assert http.delete(f"/v1/videos/{slow}").status_code == 200
            done, _ = harness.wait_all(cluster.url, quick, timeout=120)
            assert [done[i]["status"] for i in quick] == ["completed", "completed"], cluster.log("worker-0")[-3000:]
        log = cluster.log("worker-0")
        assert "2 ranks make each video" in log and f"job {slow} stopped" in log
        assert not (cluster.media / slow).exists()
        os.killpg(worker.pid, signal.SIGTERM)  # torchrun and its ranks, as a service manager stops them
        worker.wait(60)  # torchrun itself reports a signal as a failure; what matters is that the ranks end
        assert "stopping (SIGTERM)" in cluster.log("worker-0")
    finally:
        cluster.stop()


def kinema(*args: str) -> tuple[int, list[str]]:
    result = run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=120)
    return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.parametrize("args, words", [
    (["serve", "--workers", "0"], "--workers 0 needs a PostgreSQL job store"),
    (["serve", "--workers", "3"], "workers must be 0 or 1"),
    (["serve", "--db", "postgresql://127.0.0.1:1/jobs"], "needs --media"),
    (["serve", "--db", " "], "db is empty"),
    (["serve", "--lease-seconds", "0.5"], "lease-seconds must be between 2 and 3600"),
    (["worker", "--db", "jobs.sqlite", "--media", "."], "a worker needs a PostgreSQL job store"),
    (["worker", "--db", "postgresql://127.0.0.1:1/jobs", "--media", ".", "--poll-seconds", "0"],
     "poll-seconds must be between"),
    (["worker", "--db", "postgresql://kinema:hunter2@127.0.0.1:1/jobs?connect_timeout=2", "--media", "."],
     "cannot be reached"),
    (["worker", "--db", "postgresql://127.0.0.1:1/jobs", "--media", "no-such-folder"], "is not a folder"),
    (["worker", "--db", "postgresql://127.0.0.1:1/jobs", "--media", ".", "--device", "tpu"], "device 'tpu'"),
    (["worker", "--db", "postgresql://127.0.0.1:1/jobs", "--media", ".", "--offload", "model"],
     "moves models to a GPU"),
])
def test_store_options_are_checked_with_one_line(args, words):
    status, lines = kinema(*args)
    assert status == 2 and len(lines) == 1 and words in lines[0], lines
    assert "hunter2" not in lines[0]

