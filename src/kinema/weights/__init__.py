"""The models that ship inside the package, and how a model is found: by a folder path or by a packaged name.

Each packaged model is a pipeline folder here (``model_index.json``, ``transformer/``, ``vae/``; fp16
safetensors) installed as package data, so a plain ``pip install`` carries it and nothing is downloaded.
``DEFAULT_MODEL`` (``kinema.frames``) is the one ``kinema generate``, ``kinema serve`` and ``kinema eval suite``
load when no ``--model`` is given. ``find_model`` takes a folder path (any pipeline folder, such as
``kinema train export-dit`` writes) or the name of a packaged model; an existing folder is taken as it is, so a
folder in the working directory wins over a packaged model of the same name.
"""

from __future__ import annotations

from pathlib import Path

from kinema.errors import KinemaError
from kinema.frames import DEFAULT_MODEL

PACKAGED = Path(__file__).resolve().parent  # one pipeline folder per packaged model
INDEX = "model_index.json"


def packaged_models() -> list[str]:
    """The names of the models that ship inside the package."""
    return sorted(folder.name for folder in PACKAGED.iterdir() if (folder / INDEX).is_file())


def find_model(model: str | Path | None = None) -> Path:
    """The folder of a model: ``model`` itself when it is a folder, else the packaged model of that name;
    ``DEFAULT_MODEL`` when None. One-line KinemaError when it is neither."""
    name = DEFAULT_MODEL if model is None else str(model)
    path = Path(name)
    if path.is_dir():
        return path
    if path.name == name and (PACKAGED / name / INDEX).is_file():  # a bare name, not a path
        return PACKAGED / name
    what = "is a file, not a model folder" if path.exists() else "does not exist"
    raise KinemaError(f"model folder '{name}' {what} (nor is it a packaged model: "
                      f"{', '.join(packaged_models()) or 'none'})")
