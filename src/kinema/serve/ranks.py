"""A worker on several GPUs: ``torchrun --nproc_per_node N -m kinema worker ...`` makes each job's video on all N
ranks together (``KinemaPipeline.enable_parallel``).

Rank 0 is the worker of ``kinema.serve.worker``: it claims jobs, holds their leases and writes their results.
The other ranks follow it (``follow``): rank 0 tells them, as JSON on a gloo group of the CPU, which job to run
(or that it has none yet, every poll, so that a quiet queue never lets a collective time out, or that it is
stopping), and at every sampler step whether to go on: so a cancelled job, or a worker told to stop, stops on
every rank at the same step. A rank that fails alone in the middle of a video (out of memory on one GPU) leaves
the others waiting in a collective until the process group's timeout ends them all; the job's lease then runs
out and another worker runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from kinema.inference.generate import run
from kinema.serve.jobs import request_for

log = logging.getLogger("kinema.serve")
GO, CANCEL, STOP = 0, 1, 2  # what rank 0 says at each sampler step


class Halted(Exception):
    """Rank 0 said to stop the video being made."""


class RankChannel:
    """Rank 0's word to the other ranks of a worker. Every rank must create it, then make the same calls: rank 0
    with the message, the others with none."""

    def __init__(self) -> None:
        self.group = dist.new_group(backend="gloo")  # small messages on the CPU, wherever the model runs
        self.rank = dist.get_rank()

    def send(self, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rank 0's ``message`` on every rank."""
        payload = json.dumps(message).encode() if self.rank == 0 else b""
        size = torch.tensor([len(payload)], dtype=torch.int64)
        dist.broadcast(size, src=0, group=self.group)
        data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.rank == 0 else torch.empty(
            int(size), dtype=torch.uint8)
        dist.broadcast(data, src=0, group=self.group)
        return json.loads(bytes(data.tolist()).decode())

    def verdict(self, word: int = GO) -> int:
        """Rank 0's ``word`` (GO, CANCEL or STOP) on every rank."""
        said = torch.tensor([word], dtype=torch.int64)
        dist.broadcast(said, src=0, group=self.group)
        return int(said)


def follow(pipe: Any, media: Path, ranks: RankChannel) -> None:
    """A rank other than 0: make every video rank 0 makes, with it, until it says it stops. Only rank 0 writes into
    the media folder; this rank's copies go to a temporary folder. SIGINT and SIGTERM are rank 0's to act on."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    with tempfile.TemporaryDirectory() as scratch:
        while True:
            message = ranks.send()
            if message.get("stop"):
                return
            if "job" not in message:
                continue
            request = request_for(message["params"], media / message["job"])
            request = dataclasses.replace(request, output=str(Path(scratch) / Path(request.output).name))

            def progress(_step: int, _total: int, _latents: Any) -> None:
                if ranks.verdict() != GO:
                    raise Halted

            try:
                run(pipe, request, progress)
            except Exception as error:  # rank 0 fails the job, or stopped it; this rank goes on
                log.debug("rank %d: job %s ended early: %s", ranks.rank, message["job"], error)
