"""Where `kinema generate`'s start-up time goes, phase by phase, each in a fresh interpreter. Prints JSON lines.

    python benchmarks/bench_startup.py [--repeats 3]

Phases, each timed in its own process after the ones before it: the interpreter; `import torch`; diffusers'
ModelMixin (what kinema's models subclass); the rest of `kinema.inference.pipeline` (diffusers' pipeline class,
kinema's models); loading the packaged model's weights; loading the text encoder; the first generation (4 s of 64x64,
the defaults). Side by side, the whole commands: `kinema --version` and `kinema generate` end to end, as a user runs
them. Medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

PROMPT = "a red ball is thrown to the right and bounces on the sand"
PHASES = """
import time, json
t = [time.perf_counter()]
import torch
t.append(time.perf_counter())
from diffusers.models.modeling_utils import ModelMixin
t.append(time.perf_counter())
from kinema.inference.pipeline import KinemaPipeline
t.append(time.perf_counter())
pipe = KinemaPipeline.from_pretrained("kinema-tiny")
t.append(time.perf_counter())
pipe.text_encoder
t.append(time.perf_counter())
pipe("a red ball is thrown to the right and bounces on the sand", generator=torch.Generator().manual_seed(0))
t.append(time.perf_counter())
names = ["import_torch", "import_diffusers_modelmixin", "import_kinema_pipeline", "load_weights",
         "load_text_encoder", "first_generation"]
print(json.dumps({name: t[i + 1] - t[i] for i, name in enumerate(names)}))
"""


def timed(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    phases: dict[str, list[float]] = {}
    commands: dict[str, list[float]] = {"python_startup": [], "kinema_version": [], "kinema_generate": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            commands["python_startup"].append(timed([sys.executable, "-c", "pass"], folder))
            found = json.loads(subprocess.run([sys.executable, "-c", PHASES], check=True, capture_output=True,
                                              text=True, env=env, cwd=folder).stdout)
            for name, seconds in found.items():
                phases.setdefault(name, []).append(seconds)
            commands["kinema_version"].append(timed([sys.executable, "-m", "kinema", "--version"], folder))
            commands["kinema_generate"].append(timed([sys.executable, "-m", "kinema", "generate", PROMPT, "-o",
                                                      "out.mp4"], folder))
    median = {name: round(statistics.median(values), 2) for name, values in {**commands, **phases}.items()}
    print(json.dumps({"benchmark": "startup", **median, "repeats": args.repeats,
                      "machine": f"{platform.machine()} {os.cpu_count()} cpus", "load_average": os.getloadavg()[0],
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
