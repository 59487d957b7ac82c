"""Seeded sampling: every sample of every passage from a random stream of its own."""

from __future__ import annotations

import hashlib


def row_seed(seed: int, pid: str, sample_index: int) -> int:
    """The seed of one sample of one passage, derived from the run's seed."""
    digest = hashlib.sha256(f"{seed}/{pid}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SeededSampler:
    """Sample every row of a batch from a random stream of its own.

    Each row (a passage and a sample index) draws its noise from a generator seeded by the run's seed,
    the passage id and the sample index, so its completion does not depend on which passages share
    its batch, on their order or on `batch_size`. It applies temperature and top-p with the
    transformers warpers, samples by an exponential race (the Gumbel-max trick, equivalent to
    `torch.multinomial`), and leaves only the chosen token finite for `generate` to pick.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probabilities = scores.softmax(dim=-1)
        noise = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        waiting_times = (-torch.log1p(-noise)).clamp_min(1e-30)
        choice = (probabilities / waiting_times).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice, 0.0)
