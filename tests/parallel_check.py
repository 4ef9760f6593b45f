"""Run by tests/test_parallel.py under torchrun (gloo, CPU): the DiT and the pipeline with their work shared among
the ranks, against the same calls in one process. Every rank computes both; rank 0 writes the largest
differences as JSON to the path given as the first argument."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from conftest import random_dit  # this script's folder, tests/, comes first on sys.path
from kinema.models.dit import FrameCache, VideoDiT, block_causal
from kinema.models.parallel import SequenceParallel


class Words:
    """A deterministic text encoder: one random 16-d token per word."""

    def encode(self, texts):
        rows = [[self.vector(w) for w in t.split() or [""]] for t in texts]
        tokens = torch.zeros(len(rows), max(map(len, rows)), 16)
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, :len(row)], mask[i, :len(row)] = torch.stack(row), True
        return tokens, mask

    def encode_cached(self, text):
        return self.encode([text])

    @staticmethod
    def vector(word):
        return torch.randn(16, generator=torch.Generator().manual_seed(sum(map(ord, word)) + len(word)))


def tiny_dit(heads: int = 4) -> VideoDiT:
    return random_dit(num_layers=2, num_attention_heads=heads, attention_head_dim=12, ffn_dim=64, text_dim=16,
                      in_channels=4, out_channels=4)


def dit_cases(model: VideoDiT, group: SequenceParallel) -> dict[str, float]:
    """Largest |parallel - one process| of a few DiT passes; latents whose frames have 15 tokens (an uneven split)."""
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 4, 6, 10, generator=generator), torch.rand(2, 4, generator=generator)
    text = torch.randn(2, 2, 5, 16, generator=generator)  # two sequences: per-frame text
    index = torch.tensor([[0, 0, 1, 1], [1, 0, 1, 0]])

    def passes() -> list[torch.Tensor]:
        out = [model(x, t, text[:, 0]), model(x, t, text, frame_text_index=index),
               model(x, t, text[:, 0], attention_frames=block_causal(4))]
        cache, context = FrameCache(len(model.blocks)), model.prepare_text(text[:, 0])
        out.append(model(x[:, :, :2], t[:, :2], context, cache=cache))  # two frames at once, then one at a time
        cache.commit(2)
        for k in (2, 3):
            out.append(model(x[:, :, k:k + 1], t[:, k:k + 1], context, cache=cache))
            cache.commit(1)
        return out

    with torch.no_grad():
        model.set_sequence_parallel(None)
        alone = passes()
        model.set_sequence_parallel(group)
        shared = passes()
        model.set_sequence_parallel(None)
    names = ["plain", "per_frame_text", "block_causal", "cache_2", "cache_3", "cache_4"]
    heads = model.config.num_attention_heads
    return {f"dit_{heads}_heads_{n}": (a - b).abs().max().item() for n, a, b in zip(names, alone, shared)}


def pipeline_cases(split_guidance: bool) -> dict[str, float]:
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.models.vae import VideoVAE

    torch.manual_seed(0)
    pipe = KinemaPipeline(tiny_dit(), VideoVAE.from_name("tiny", base_dim=8, z_dim=4), text_encoder=Words())
    pipe.defaults.steps = 3
    found = {}
    for sampler in ("euler", "ar"):
        def make(sampler: str = sampler) -> torch.Tensor:
            return pipe("a red ball bounces", num_frames=13, height=48, width=80, sampler=sampler,
                        output_type="latent", generator=torch.Generator().manual_seed(3)).frames

        alone = make()
        layout = pipe.enable_parallel(split_guidance)
        shared = make()
        pipe.parallel = None
        pipe.transformer.set_sequence_parallel(None)
        name = f"pipeline_{sampler}_{'split' if split_guidance else 'sequence'}_{layout.branches}x{layout.sequence}"
        found[name] = (alone - shared).abs().max().item()
    return found


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    found = dit_cases(tiny_dit(), SequenceParallel())
    found |= dit_cases(tiny_dit(heads=2), SequenceParallel())  # as many heads as ranks
    found |= pipeline_cases(split_guidance=True) | pipeline_cases(split_guidance=False)
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as out:
            json.dump({"world": dist.get_world_size(), **found}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
