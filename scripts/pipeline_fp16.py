"""Copy a pipeline folder with its weights in float16 (what src/kinema/weights/ ships): python scripts/pipeline_fp16.py SRC DST"""

import json
import sys
from pathlib import Path

import torch


def main(source: str, target: str) -> None:
    from kinema.inference.pipeline import KinemaPipeline

    pipe = KinemaPipeline.from_pretrained(source)
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(target)
    for part in ("transformer", "vae"):  # the folder it was loaded from is no part of the model
        config = Path(target) / part / "config.json"
        values = json.loads(config.read_text())
        values.pop("_name_or_path", None)
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/pipeline_fp16.py SRC DST")
    from kinema.errors import KinemaError

    try:
        main(sys.argv[1], sys.argv[2])
    except KinemaError as error:
        sys.exit(f"error: {error}")
