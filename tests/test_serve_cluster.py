"""kinema beyond one process: an API process and worker processes on a PostgreSQL job store, killed with SIGKILL
while they work; and the command line's checks of the store options.

The cluster runs benchmarks/bench_cluster.py's harness, so that the test and the figures in benchmarks/RESULTS.md
come from the same code. It needs a PostgreSQL server ($KINEMA_TEST_POSTGRES; skipped without one, except in CI).
"""

from __future__ import annotations

import sys

import pytest

from conftest import bench_module, run_bounded


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
])
def test_store_options_are_checked_with_one_line(args, words):
    status, lines = kinema(*args)
    assert status == 2 and len(lines) == 1 and words in lines[0], lines
    assert "hunter2" not in lines[0]

