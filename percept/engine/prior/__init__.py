"""The demo's own image-text prior: tiny CLIP-style pre-training on generated images and captions."""
