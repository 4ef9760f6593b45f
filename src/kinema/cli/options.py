"""Options that several commands share: where a model runs (a diffusers Wan folder's device, dtype and offload)."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[str, typer.Option(help="Where a Wan model runs: cpu, cuda or cuda:N.")]
Offload = Annotated[str, typer.Option(help="none, model (each model moves to the GPU while it runs) or sequential "
                                           "(each layer; least GPU memory, slowest).")]
Dtype = Annotated[str | None, typer.Option(
    help="A Wan transformer's dtype: float32, bfloat16 or float16 (default: bfloat16 on a GPU, float32 on the CPU; "
         "the VAE stays float32).")]
