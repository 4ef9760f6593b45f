"""Fixtures shared by the test modules."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and steadiest on shared cores, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class WordEncoder:
    """A deterministic stand-in for the text encoder: one random 16-d token per word."""

    dim = 16

    def encode(self, texts):
        rows = [[self._vec(w) for w in (t.split() or [""])] for t in texts]
        # on the CPU, as the real encoder's states come back: the pipeline moves them to its device
        tokens = torch.zeros(len(rows), max(len(r) for r in rows), self.dim, device="cpu")
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device="cpu")
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = torch.stack(r)
            mask[i, :len(r)] = True
        return tokens, mask

    def encode_cached(self, text):
        return self.encode([text])

    @staticmethod
    def _vec(word):
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return torch.randn(16, generator=torch.Generator().manual_seed(seed), device="cpu")


@pytest.fixture(scope="session")
def word_encoder():
    """The WordEncoder class (session-scoped, so module-scoped fixtures can build pipelines with it)."""
    return WordEncoder


def random_pipeline(num_layers: int = 2, scale: float = 0.02, **defaults):
    """A tiny pipeline (VAE base 8, 4 latent channels; DiT width 48) on the WordEncoder, with random weights: the
    tensors adaLN-zero starts at zero are drawn too (normal, ``scale``), so that the text matters. 2 steps unless
    ``defaults`` say otherwise."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.dit import VideoDiT
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    vae = VideoVAE.from_name("tiny", base_dim=8, z_dim=4)
    dit = VideoDiT(in_channels=4, out_channels=4, num_layers=num_layers, num_attention_heads=2, attention_head_dim=24,
                   ffn_dim=64, text_dim=16)
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, scale)
    pipe = KinemaPipeline(dit.eval(), vae.eval(), text_encoder=WordEncoder())
    pipe.defaults.steps = 2
    for name, value in defaults.items():
        setattr(pipe.defaults, name, value)
    return pipe


def save_tiny_model(folder: Path, num_layers: int = 1, **defaults) -> Path:
    """A tiny randomly initialised pipeline folder (fast to load, fast to run) with these sampling defaults."""
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.dit import VideoDiT
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    dit = VideoDiT(num_layers=num_layers, num_attention_heads=2, attention_head_dim=24, ffn_dim=64, in_channels=4,
                   out_channels=4)
    pipe = KinemaPipeline(dit, VideoVAE.from_name("tiny", base_dim=8, z_dim=4))
    for name, value in defaults.items():
        setattr(pipe.defaults, name, value)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_folder():
    """``save_tiny_model``, for module-scoped fixtures."""
    return save_tiny_model


def run_bounded(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` in a process group of its own. On timeout
    the whole group is killed, so that no grandchild (a torchrun rank, a data worker) keeps the output pipes
    open, and the test fails at once instead of hanging."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(map(str, command))} ran past {timeout:g} s; its stderr ends:\n{stderr[-3000:]}")
        finally:
            with contextlib.suppress(ProcessLookupError):  # anything the command left behind in its group
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


POSTGRES_ENV = "KINEMA_TEST_POSTGRES"  # a server's URL (scripts/postgres_cluster.sh start DIR prints one)


def _no_postgres(reason: str) -> None:
    """Skip where no PostgreSQL server was given; in CI, which must give one (.ci/run), fail."""
    if os.environ.get("CI"):
        pytest.fail(f"CI runs the PostgreSQL tests: {reason}")
    pytest.skip(f"{reason} (set {POSTGRES_ENV}=postgresql://...; scripts/postgres_cluster.sh starts a server)")


@pytest.fixture
def postgres_url():
    """The URL of a fresh, empty PostgreSQL database on the server of $KINEMA_TEST_POSTGRES, dropped afterwards."""
    import uuid
    from urllib.parse import urlsplit

    server = os.environ.get(POSTGRES_ENV)
    if not server:
        _no_postgres(f"{POSTGRES_ENV} is not set")
    import psycopg

    name = f"kinema_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        _no_postgres(f"no PostgreSQL server at {POSTGRES_ENV}: {str(error).strip().splitlines()[0]}")
    yield urlsplit(server)._replace(path=f"/{name}").geturl()
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_module(name: str):
    """benchmarks/bench_NAME.py as a module, for tests that share a benchmark's code (its twins, its harness)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}_for_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    sys.path.insert(0, str(path.parent))  # a benchmark may import its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def random_dit(**config):
    """A VideoDiT (seed 0) whose zero-initialised layers get small random values too, so that every path carries
    signal; eval mode."""
    from kinema.models.dit import VideoDiT

    torch.manual_seed(0)
    model = VideoDiT(**config)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model.eval()
