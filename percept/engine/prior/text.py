"""The text tower of the demo prior: a word tokenizer over the caption grammar and a tiny transformer.

The vocabulary is every word the caption generator (:mod:`percept.engine.prior.scenes`) can write, sorted, after
the padding token; a caption outside it is refused (it would mean the grammar changed without the
vocabulary). The tower embeds the tokens with learned positions, runs ``layers`` pre-norm transformer
encoder layers and averages the non-padding tokens, then projects to the joint embedding width.
"""
from __future__ import annotations

import torch
from torch import nn

from . import scenes

PAD = "<pad>"
MAX_TOKENS = 24
# The appearance words of the captions (scenes.appearance_words), weakest first within each degradation: the labels
# of the pre-training's caption-word prediction. A strength word also counts as the weaker words of its scale ("very
# blurry" is also blurry, soft and slightly soft), so the labels of one degradation are ordinal.
APPEARANCE_SCALES = (("slightly soft", "soft", "blurry", "very blurry"), ("slightly grainy", "grainy", "very noisy"),
                     ("compressed", "blocky", "heavily compressed"),
                     ("slightly banded", "posterized", "heavily posterized"),
                     ("dark",), ("bright",), ("dull",), ("vivid",), ("crisp, clean",))
APPEARANCE_LABELS = tuple(word for scale in APPEARANCE_SCALES for word in scale)


def _words(text: str) -> list[str]:
    return text.replace(",", " ,").split()


def vocabulary() -> list[str]:
    """All words of the caption grammar (sorted), after ``<pad>``."""
    words = {"a", "an", "of", "on", "background", ",", *scenes.NOUNS, *scenes.COUNT_WORDS.values()}
    words |= {w for name in (*scenes.COLOURS, *scenes.BACKGROUNDS) for w in _words(name)}
    words |= {w for shape in scenes.SHAPES for form in (shape, shape + "s") for w in _words(form)}
    for phrase in APPEARANCE_LABELS:
        words |= set(_words(phrase))
    return [PAD, *sorted(words)]


def appearance_phrases(caption: str) -> list[str]:
    """The appearance words of a caption, in its order: the comma-separated phrases between the article and the
    noun ("a slightly soft, dark photo of ..." -> ["slightly soft", "dark"]; "crisp, clean" is one phrase)."""
    adjectives = caption.split(" of ", 1)[0].split(" ", 1)[-1].rsplit(" ", 1)[0]
    phrases = adjectives.replace("crisp, clean", "crisp+clean").split(", ")
    return [p.replace("crisp+clean", "crisp, clean") for p in phrases]


def appearance_targets(captions: list[str]) -> torch.Tensor:
    """(len(captions), len(APPEARANCE_LABELS)) multi-hot targets of the captions' appearance words, ordinal within a
    degradation (a strength word also marks the weaker words of its scale). A phrase that is no appearance word is
    refused."""
    out = torch.zeros(len(captions), len(APPEARANCE_LABELS))
    for row, text in enumerate(captions):
        for phrase in appearance_phrases(text):
            scale = next((s for s in APPEARANCE_SCALES if phrase in s), None)
            if scale is None:
                raise ValueError(f"caption {text!r}: {phrase!r} is not one of the appearance words {APPEARANCE_LABELS}")
            start = APPEARANCE_LABELS.index(scale[0])
            out[row, start:start + scale.index(phrase) + 1] = 1.0
    return out


class Tokenizer:
    def __init__(self):
        self.words = vocabulary()
        self.index = {w: i for i, w in enumerate(self.words)}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """(len(captions), MAX_TOKENS) int64 token ids, 0-padded."""
        out = torch.zeros(len(captions), MAX_TOKENS, dtype=torch.long)
        for row, text in enumerate(captions):
            words = _words(text)
            unknown = [w for w in words if w not in self.index]
            if unknown or len(words) > MAX_TOKENS:
                raise ValueError(f"caption {text!r}: " + (f"words {unknown} are not in the prior's vocabulary"
                                                          if unknown else f"more than {MAX_TOKENS} tokens"))
            out[row, :len(words)] = torch.tensor([self.index[w] for w in words])
        return out


class TextTower(nn.Module):
    def __init__(self, vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4, out_dim: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.randn(MAX_TOKENS, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = tokens != 0
        x = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=~keep)
        x = self.norm(x) * keep.unsqueeze(-1)
        return self.proj(x.sum(1) / keep.sum(1, keepdim=True).clamp(min=1))
