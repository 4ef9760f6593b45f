"""One video across several processes (GPUs) on ``torch.distributed``: sequence-parallel self-attention in the
Ulysses scheme (Jacobs et al. 2023, "DeepSpeed Ulysses"), and classifier-free guidance with its two passes on
different ranks. Inference only.

Ulysses: each rank of a sequence group holds a share of the transformer's tokens: the same block of every
latent frame's patch tokens (so that per-frame modulation and per-frame text work on it unchanged), and runs
everything per token on them alone. Self-attention is the one place where tokens meet: an all-to-all turns
(all heads, this rank's tokens) into (this rank's heads, every token), attention runs on those heads over the
whole sequence (a frame cache keeps the keys and values of this rank's heads), and a second all-to-all turns the
result back. The ranks' outputs are gathered once, after the last block.

Guidance: the ranks split into two halves (``ParallelLayout``), one running the conditional pass and the other
the unconditional one, each half a sequence group of its own; after every pass the paired ranks swap velocities.

Every rank of a group computes the same video: the same seed gives the same noise everywhere, and the ranks of
a group leave each collective with the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from kinema.errors import KinemaError


def split_sizes(total: int, parts: int) -> list[int]:
    """``total`` items in ``parts`` contiguous shares that differ by at most one, the larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """x (..., n, d) padded with zeros to (..., length, d)."""
    return torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[-2]))


class SequenceParallel:
    """A sequence group: its ranks share the tokens of one transformer pass (``VideoDiT.sequence_parallel``)."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._layouts: dict[tuple, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def check_heads(self, heads: int) -> None:
        if heads % self.size:
            raise KinemaError(f"sequence parallel: the transformer's {heads} attention heads cannot be split over "
                              f"{self.size} ranks (use a number of ranks that divides {heads})")

    def layout(self, frames: int, per_frame: int, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the token indices each rank holds, in natural order, for every rank; the permutation that puts the
        ranks' tokens, concatenated in rank order, back in natural order)."""
        key = (frames, per_frame, str(device))
        if key not in self._layouts:
            starts = torch.tensor([0, *split_sizes(per_frame, self.size)]).cumsum(0).tolist()
            base = torch.arange(frames, device=device)[:, None] * per_frame
            shares = [(base + torch.arange(starts[r], starts[r + 1], device=device)).flatten()
                      for r in range(self.size)]
            natural = torch.argsort(torch.cat(shares))
            self._layouts[key] = (shares, natural)
        return self._layouts[key]

    def local_tokens(self, frames: int, per_frame: int, device: torch.device) -> torch.Tensor:
        """The indices of this rank's tokens among the frames * per_frame tokens of a pass."""
        return self.layout(frames, per_frame, device)[0][self.rank]

    def heads_to_tokens(self, x: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
        """(B, heads, n_local, d): every head of this rank's tokens -> (B, heads / size, N, d): this rank's heads
        of every token, in natural order."""
        shares, natural = self.layout(frames, per_frame, x.device)
        longest = max(len(share) for share in shares)
        x = pad_tokens(x, longest)  # shares of equal size travel (gloo's all-to-all wants them)
        inputs = [part.contiguous() for part in x.chunk(self.size, dim=1)]  # to rank r: its heads of my tokens
        outputs = [torch.empty_like(inputs[0]) for _ in shares]  # from rank r: my heads of its tokens
        dist.all_to_all(outputs, inputs, group=self.group)
        return torch.cat([part[:, :, :len(share)] for part, share in zip(outputs, shares)], dim=2)[:, :, natural]

    def tokens_to_heads(self, x: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
        """The inverse of ``heads_to_tokens``: (B, heads / size, N, d) -> (B, heads, n_local, d)."""
        shares, _ = self.layout(frames, per_frame, x.device)
        longest = max(len(share) for share in shares)
        inputs = [pad_tokens(x[:, :, share], longest).contiguous() for share in shares]  # to r: my heads, its tokens
        outputs = [torch.empty_like(inputs[0]) for _ in shares]  # from rank r: its heads of my tokens
        dist.all_to_all(outputs, inputs, group=self.group)
        return torch.cat(outputs, dim=1)[:, :, :len(shares[self.rank])]  # (B, heads, n_local, d)

    def gather_tokens(self, x: torch.Tensor, frames: int, per_frame: int) -> torch.Tensor:
        """(B, n_local, C) from every rank -> (B, N, C) in natural order, on every rank."""
        shares, natural = self.layout(frames, per_frame, x.device)
        padded = pad_tokens(x, max(len(share) for share in shares)).contiguous()  # (B, n_longest, C)
        gathered = [torch.empty_like(padded) for _ in shares]
        dist.all_gather(gathered, padded, group=self.group)
        return torch.cat([part[:, :len(share)] for part, share in zip(gathered, shares)], dim=1)[:, natural]


@dataclass
class ParallelLayout:
    """How the ranks of a process group share one video: ``branches`` (1, or 2 with guidance on different ranks)
    sequence groups of ``sequence`` ranks each. This rank runs branch ``branch`` (0: the conditional pass, 1: the
    unconditional one) in ``sequence_group``; ``pair`` joins it to the rank of the other branch that holds the
    same tokens."""

    branches: int
    sequence: int
    branch: int
    sequence_group: SequenceParallel | None
    pair: dist.ProcessGroup | None

    @classmethod
    def create(cls, split_guidance: bool = True) -> ParallelLayout:
        """Every rank of the default process group must call this, with the same argument. ``split_guidance``:
        put the two guidance passes on different halves of the ranks (needs an even number of ranks)."""
        world, rank = dist.get_world_size(), dist.get_rank()
        branches = 2 if split_guidance and world % 2 == 0 else 1
        sequence = world // branches
        sequence_group = pair = None
        for b in range(branches):  # every rank creates every group, in the same order
            ranks = list(range(b * sequence, (b + 1) * sequence))
            group = dist.new_group(ranks) if sequence > 1 else None
            if rank in ranks and group is not None:
                sequence_group = SequenceParallel(group)
        if branches == 2:
            for r in range(sequence):
                group = dist.new_group([r, r + sequence])
                if rank in (r, r + sequence):
                    pair = group
        return cls(branches, sequence, rank // sequence, sequence_group, pair)

    def exchange(self, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's velocity and its pair's -> (conditional, unconditional), the same on both."""
        both = [torch.empty_like(velocity) for _ in range(2)]
        dist.all_gather(both, velocity.contiguous(), group=self.pair)
        return both[0], both[1]
