"""Options several commands share: where the model runs, in what precision (``kinema.devices``), and how its weights
are offloaded to host memory (diffusers' CPU offload; for models larger than the GPU, such as Wan's)."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or mps (default: the best available).",
                                            show_default=False)]
Dtype = Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: bfloat16 where the device "
                                                "computes in it, else float32; a Wan folder's VAE stays float32).",
                                           show_default=False)]
Offload = Annotated[str, typer.Option(help="none, model (each model moves to the GPU while it runs) or sequential "
                                           "(each layer; least GPU memory, slowest).")]
