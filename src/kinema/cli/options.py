"""Options several commands share: where the model runs and in what precision (``kinema.devices``)."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or mps (default: the best available).",
                                            show_default=False)]
Dtype = Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: bfloat16 where the device "
                                                "computes in it, else float32).", show_default=False)]
