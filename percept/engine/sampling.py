"""Multi-dataset batches (paper §3.2): "proportional sampling ensuring that each dataset contributes to a
batch in proportion to its size".

:class:`ProportionalBatchSampler` yields batches of global indices into the concatenation of the training
sets of a run (each set's items = its images x its IQA training replicas, LoDa's per-dataset repeats).

* **Size = images.** A dataset's share of every batch is its share of the group's *images*, not of its
  items: LoDa's replicas (TID2013 x10, LIVEC x5, KonIQ-10k x3, ...) make a small dataset's epoch longer
  when it is trained alone, but would otherwise make it dominate a mixed batch (TID2013 would fill ~46% of
  the synthetic-IQA group's batches for ~21% of its images). The epoch keeps its length (the sum of the
  items); dataset ``d`` fills ``T * n_d / N`` of its ``T`` slots (``n_d`` images of ``N``; largest
  remainder), drawn from its items in passes over all its images, so every dataset is seen the same number
  of times per image in an epoch (the image-weighted mean of the replicas). With one dataset an epoch
  visits every item exactly once, in random order within each replica pass (replica p of every image
  before replica p+1; before protocol 2 the replicas were mixed).
* **At least ``min_items`` per appearance (ours).** A correlation loss (PLCC) on two items is ±1 whatever
  the model does, and with batch 32 LIVEC would have ~1.7 items per batch in the authentic-IQA group. A
  dataset expected to bring fewer than ``min_items + 1`` items per batch is therefore sampled in chunks of
  at least ``min_items`` items, each chunk placed whole in one batch: it then sits out some batches instead
  of entering every batch with 1-2 items; its share of the epoch is unchanged. (The paper does not say how
  it handles this; the training loop drops a dataset with fewer items than its loss needs from a batch.)
* Order: each dataset's items (or chunks) get evenly spaced keys ``(j + u_d) / m_d`` (``u_d ~ U[0, 1)``);
  sorting all keys interleaves the datasets, so every batch holds about ``batch_size * n_d / N`` items of
  ``d``; batches are closed once they hold ``batch_size`` items (a chunk may overfill one by up to
  ``min_items - 1``). A trailing batch of a single item is dropped.

:func:`batch_composition` reports, per dataset, how often it enters a batch and with how many items (the
numbers for the plan's multi-dataset groups: ``percept reproduce --dry-run``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from .distributed import DistContext, shard


def _quotas(total: int, images: Sequence[int]) -> np.ndarray:
    """``total`` slots split in proportion to ``images`` (largest remainder; sums to ``total``)."""
    images = np.asarray(images, dtype=float)
    exact = total * images / images.sum()
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[:total - quota.sum()]] += 1
    return quota


class ProportionalBatchSampler:
    """Batches for datasets of ``sizes`` items (``images`` images each; default: items = images).

    ``min_items``: per dataset (or one number for all), the fewest items it brings to a batch it enters
    (1 = no constraint). See the module docstring for the rule.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int, dist: DistContext = DistContext(),
                 images: Sequence[int] | None = None, min_items: int | Sequence[int] = 1):
        self.sizes, self.batch_size, self.seed, self.dist = [int(s) for s in sizes], int(batch_size), seed, dist
        self.images = [int(n) for n in (images if images is not None else self.sizes)]
        if len(self.images) != len(self.sizes) or min(self.images) < 1:
            raise ValueError(f"images must give a positive image count per dataset; got {self.images} for "
                             f"sizes {self.sizes}")
        self.min_items = [int(min_items)] * len(self.sizes) if np.isscalar(min_items) else [int(m) for m in min_items]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self._cache: list[np.ndarray] | None = None

    def _items(self, rng, d: int, count: int) -> np.ndarray:
        """``count`` items of dataset ``d``: passes over its images, each pass a random order of them,
        the p-th pass using replica ``p mod replicas`` (item ``p * n + row``)."""
        n, size = self.images[d], self.sizes[d]
        replicas = max(1, size // n)
        passes = -(-count // n)
        rows = [rng.permutation(n) + (p % replicas) * n for p in range(passes)]
        return self.offsets[d] + np.concatenate(rows)[:count]

    def batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        total = sum(self.sizes)
        quotas = _quotas(total, self.images) if len(self.sizes) > 1 else np.array(self.sizes)
        keys, units = [], []
        for d, count in enumerate(quotas):
            items = self._items(rng, d, int(count))
            per_batch = self.batch_size * count / total
            if len(self.sizes) > 1 and self.min_items[d] > 1 and per_batch < self.min_items[d] + 1:
                chunks = np.array_split(items, max(1, count // self.min_items[d]))
            else:
                chunks = [items[i:i + 1] for i in range(len(items))]
            keys.append((np.arange(len(chunks)) + rng.random()) / len(chunks))
            units.extend(chunks)
        order = np.lexsort((rng.random(len(units)), np.concatenate(keys)))
        out, current, filled = [], [], 0
        for i in order:
            current.append(units[i])
            filled += len(units[i])
            if filled >= self.batch_size:
                out.append(np.concatenate(current))
                current, filled = [], 0
        if current:
            out.append(np.concatenate(current))
        return out if len(out[-1]) > max(1, self.dist.world - 1) else out[:-1]

    def __iter__(self):
        """This process's share of each batch (all of it without torchrun)."""
        return iter([shard(b.tolist(), self.dist) for b in self.batches()])

    def __len__(self) -> int:
        if self._cache is None:
            self._cache = self.batches()
        return len(self._cache)


def batch_composition(sizes: Sequence[int], batch_size: int, images: Sequence[int] | None = None,
                      min_items: int | Sequence[int] = 1, names: Sequence[str] | None = None,
                      seed: int = 0, threshold: int = 3) -> pd.DataFrame:
    """Per dataset, over one epoch of :class:`ProportionalBatchSampler`: its share of the images and of the
    items, the share of batches it enters (``present``), the share in which it brings at least
    ``threshold`` items (``share_ge{threshold}``), and its mean items per batch it enters."""
    sampler = ProportionalBatchSampler(sizes, batch_size, seed, images=images, min_items=min_items)
    batches = sampler.batches()
    edges = np.concatenate([sampler.offsets, [sum(sampler.sizes)]])
    counts = np.stack([np.histogram(b, bins=edges)[0] for b in batches])   # (batches, datasets)
    names = list(names) if names is not None else [str(d) for d in range(len(sizes))]
    present = counts > 0
    return pd.DataFrame({
        "dataset": names, "images": sampler.images, "items": sampler.sizes,
        "image_share": np.round(np.array(sampler.images) / sum(sampler.images), 3),
        "item_share": np.round(counts.sum(0) / counts.sum(), 3),
        "present": np.round(present.mean(0), 3),
        f"share_ge{threshold}": np.round((counts >= threshold).mean(0), 3),
        "items_when_present": np.round(counts.sum(0) / np.maximum(present.sum(0), 1), 2),
        "min_when_present": [int(c[c > 0].min()) if (c > 0).any() else 0 for c in counts.T],
        "batches": len(batches)})


class TaggedConcat(Dataset):
    """Datasets concatenated for one sampler; each item says which dataset it came from (``"dataset"``: its index),
    so that a batch's rows go to their dataset's head and loss."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        d = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return {**self.datasets[d][i - int(self.offsets[d])], "dataset": d}
