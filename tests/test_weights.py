"""The packaged models: found by name or by folder, shipped inside the wheel, loadable."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kinema.errors import KinemaError
from kinema.frames import DEFAULT_MODEL
from kinema.weights import PACKAGED, find_model, packaged_models

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_model_is_found_by_name_and_a_folder_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert DEFAULT_MODEL in packaged_models()
    default = find_model()
    assert default == find_model(DEFAULT_MODEL) == PACKAGED / DEFAULT_MODEL
    assert (default / "model_index.json").is_file() and (default / "vae" / "config.json").is_file()
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert find_model(folder) == folder and find_model(str(folder)) == folder
    with pytest.raises(KinemaError, match=f"does not exist .*packaged model: {DEFAULT_MODEL}"):
        find_model("no-such-model")
    with pytest.raises(KinemaError, match="does not exist"):
        find_model(tmp_path / "missing" / DEFAULT_MODEL)  # a path is not looked up by its last name
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(KinemaError, match="is a file, not a model folder"):
        find_model("a-file")


def test_the_default_model_loads():
    from kinema.inference.generate import load_pipeline

    pipe = load_pipeline(None)
    assert pipe.name == DEFAULT_MODEL and len(pipe.weights_sha256) == 64


def test_the_wheel_carries_every_packaged_model(tmp_path):
    """A non-editable install has the models: the wheel built from the sources holds every file of them."""
    setuptools = pytest.importorskip("setuptools")  # built here without isolation: pyproject asks for >= 77
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than pyproject.toml's build requirement")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("kinema-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in packaged_models():
        for path in (PACKAGED / model).rglob("*"):
            if path.is_file():
                assert f"kinema/weights/{path.relative_to(PACKAGED).as_posix()}" in names, path
    assert "kinema/serve/static/index.html" in names and "kinema/__main__.py" in names
