"""Layer 3, data: dataset cards and sources, manifests and their preparers, splits (computed and pinned),
datasets, preprocessing, the uint8 image cache, fixture datasets in the official layouts and the generated
demo sets."""
