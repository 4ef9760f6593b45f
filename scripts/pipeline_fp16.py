"""Copy a pipeline folder with its weights in float16 (what weights/ ships): python scripts/pipeline_fp16.py SRC DST"""

import sys

import torch


def main(source: str, target: str) -> None:
    from kinema.pipeline import KinemaPipeline

    pipe = KinemaPipeline.from_pretrained(source)
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/pipeline_fp16.py SRC DST")
    main(sys.argv[1], sys.argv[2])
