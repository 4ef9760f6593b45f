"""Training on your own videos: a folder of MP4s with captions (a .txt beside each, a CSV or a JSONL manifest),
bucketed by size and length, through `kinema train vae`, `cache-latents`, `train dit` (torchrun, resume) and
`export-dit`; the README's tutorial is run as it is written, on a tiny folder made here from world clips."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from conftest import run_bounded
from kinema.media import write_video

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(96, 64), (64, 64), (96, 64), (64, 64)]  # two buckets by size; 3 s and 2 s clips: two by length


def make_folder(folder: Path, captions: str = "txt") -> list[str]:
    """World clips as MP4s with their captions as ``captions`` says: 'txt' (one beside each), 'csv'
    (metadata.csv: file_name,text) or 'jsonl' (metadata.jsonl: video, prompt). Returns the captions."""
    from kinema.world.dataset import make_clip
    from kinema.world.scene import SceneOptions, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (width, height) in enumerate(SIZES):
        seconds = 3 if n < 2 else 2
        scene = sample_scene(100 + n, SceneOptions(seconds=seconds, fps=8.0))
        clip = make_clip(scene, width, height)
        name = f"clip{n}.mp4"
        write_video(folder / name, clip.frames, 8.0, sidecar=False)
        rows.append((name, clip.captions.caption))
        if captions == "txt":
            (folder / name).with_suffix(".txt").write_text(clip.captions.caption + "\n", encoding="utf-8")
    if captions == "csv":
        with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["file_name", "text"])
            writer.writerows(rows)
    if captions == "jsonl":
        lines = [json.dumps({"video": name, "prompt": caption}) for name, caption in rows]
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [caption for _, caption in rows]


@pytest.mark.parametrize("captions", ["txt", "csv", "jsonl"])
def test_captions_from_a_txt_beside_each_video_or_a_manifest(tmp_path, captions):
    from kinema.data.folder import VideoFolderSource

    written = make_folder(tmp_path / "videos", captions)
    source = VideoFolderSource(tmp_path / "videos", fps=8.0, buckets=[(17, 64, 96), (17, 64, 64), (9, 64, 64)],
                               batch_size=2, seed=0)
    assert sorted(r.caption for r in source.records) == sorted(written) and not source.skipped
    by_name = {r.path.name: r for r in source.records}
    assert by_name["clip0.mp4"].bucket == 0 and by_name["clip1.mp4"].bucket == 1  # by aspect ratio
    assert {by_name["clip2.mp4"].bucket, by_name["clip3.mp4"].bucket} <= {0, 1, 2}
    batch = source.batch(0)
    assert batch["video"].shape[0] == 2 and len(set(batch["captions"]) - set(written)) == 0


def test_a_manifest_without_a_video_column_is_a_one_line_error(tmp_path):
    from kinema.data.folder import VideoFolderSource
    from kinema.errors import KinemaError

    make_folder(tmp_path / "videos", "txt")
    (tmp_path / "videos" / "metadata.csv").write_text("name,words\nclip0.mp4,a ball\n")
    with pytest.raises(KinemaError, match="header must name the video column"):
        VideoFolderSource(tmp_path / "videos", fps=8.0, buckets=[(17, 64, 64)], batch_size=1, seed=0)


def test_train_dit_reads_a_folder_straight(tmp_path):
    """`kinema train dit ... data.folder=DIR` trains on the videos, encoding them on the fly, whatever latent caches
    the config names."""
    from kinema.models.vae import VideoVAE

    make_folder(tmp_path / "videos", "csv")
    VideoVAE.from_name("tiny", base_dim=8, z_dim=4).save_pretrained(tmp_path / "vae")
    model = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16, "ffn_dim": 64, "in_channels": 4,
             "out_channels": 4}
    result = kinema("train", "dit", "--config", "configs/dit/tiny.yaml", f"data.folder={tmp_path / 'videos'}",
                    "data.buckets=[[17,64,96],[17,64,64]]", f"vae={tmp_path / 'vae'}", f"model={json.dumps(model)}",
                    "train.batch_size=2", "train.steps=2", "train.log_every=1",
                    f"train.out_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 2 steps" in result.stdout and "data.latent_cache is not read" in result.stdout
    assert "4 videos in 2 of 2 buckets" in result.stderr


def kinema(*args: str, cwd: Path = ROOT) -> object:
    return run_bounded([sys.executable, "-m", "kinema.cli", *args], timeout=400, cwd=cwd,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})


def tutorial_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Training on your own videos"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands, current = [], ""
    for line in block.splitlines():
        line = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                commands.append(current.strip())
            current = ""
    return commands


# What the test changes in the tutorial's commands: fewer steps, one statistics batch, its own folders.
FAST = {"train.steps=300": "train.steps=1", "train.steps=600": "train.steps=2"}


def test_the_readme_tutorial_trains_on_a_folder_and_generates(tmp_path):
    commands = tutorial_commands()
    assert [c.split()[0] for c in commands] == ["kinema", "kinema", "kinema", "torchrun", "kinema", "kinema",
                                                "kinema"], commands
    make_folder(tmp_path / "my-videos", "txt")
    for command in commands:
        for slow, fast in FAST.items():
            command = command.replace(slow, fast)
        args = shlex.split(command)
        if args[:3] == ["kinema", "world", "make"]:
            continue  # the test made its own folder, with a .txt beside each video
        if args[0] == "torchrun":  # torchrun -m kinema ...: the same entry point in two processes
            args = [sys.executable, "-m", "torch.distributed.run", "--standalone", *args[1:]]
        else:
            args = [sys.executable, "-m", "kinema.cli", *args[1:]]
        if "train" in args and ("vae" in args or "cache-latents" in args):
            args.append("data.stats_batches=1") if "vae" in args else None
        args = [a.replace("src/kinema", str(ROOT / "src" / "kinema")).replace("configs/", str(ROOT / "configs") + "/")
                for a in args]
        result = run_bounded(args, timeout=600, cwd=tmp_path,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        assert result.returncode == 0, (command, result.stderr[-3000:])
    metrics = [json.loads(line) for line in (tmp_path / "runs/my-dit/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]  # one step under torchrun, one more resumed
    index = json.loads((tmp_path / "runs/my-model/model_index.json").read_text())
    assert index["kinema"]["defaults"]["expand"] is False and index["kinema"]["defaults"]["size"] == "96x64"
    from kinema.media import read_metadata, read_video

    frames, _ = read_video(tmp_path / "mine.mp4")
    assert frames.shape[1:] == (64, 96, 3) and read_metadata(tmp_path / "mine.mp4")["expanded_prompt"] is None
