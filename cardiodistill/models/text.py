"""Note encoders: a dependency-free hashing-tokenizer transformer, and a wrapper for a local
Hugging Face model. Both map free-text notes to tokens ``[B, N, dim]`` and an embedding ``[B, dim]``.

Tokenizer (:class:`HashingTokenizer`)
    A note is lower-cased and split into words: runs of letters and digits, joined across ``.``
    and ``'`` inside them (``1.2``, ``patient's``), a ``-`` kept in front of a number that does not
    follow a word (``-45 degrees``, but ``V1-V4`` is ``v1``, ``v4``), and ``<`` / ``>`` as words of
    their own (``hs-TnT <3``). Numbers are words: ``EF 35%`` and ``EF 55%`` differ. Every word, and
    then every run of up to ``ngrams`` consecutive words, is hashed with BLAKE2b (stable across
    processes and machines, unlike Python's salted ``hash``) into ids ``2 .. vocab_size - 1``; id 0 is
    padding and id 1 the CLS token at position 0. All words come before all n-grams, so a long note
    loses its n-grams before its words; the sequence is cut at ``max_tokens`` (CLS included).

Encoder (:class:`NoteEncoder`)
    Token embedding (initialised N(0, 1), the scale of the positions) plus a fixed sin-cos
    position embedding, pre-norm transformer blocks over the non-padding tokens and a final
    LayerNorm; the embedding is the CLS output (position 0).

Hugging Face (:class:`HuggingFaceNoteEncoder`)
    A local model folder (never downloaded: ``local_files_only=True``), its hidden states projected
    to ``dim``; ``transformers`` is an optional dependency, imported only here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, one_line
from .registry import register_model, register_test
from .transformer import TokenEncoder, init_weights, masked_mean, sincos_embedding

__all__ = ["CLS_ID", "PAD_ID", "HashingTokenizer", "HuggingFaceNoteEncoder", "NoteEncoder"]

PAD_ID = 0
CLS_ID = 1

_WORD = re.compile(r"(?:(?<![^\W_])-(?=\d))?[^\W_]+(?:[.'][^\W_]+)*|[<>]")


@lru_cache(maxsize=1 << 16)
def _hash64(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


class HashingTokenizer:
    """Words and word n-grams hashed into a fixed vocabulary (see the module docstring)."""

    def __init__(self, vocab_size: int = 8192, max_tokens: int = 128, ngrams: int = 2, lowercase: bool = True):
        if vocab_size < 3:
            raise ConfigError(f"tokenizer vocab_size must be >= 3 (pad, CLS and one word id), got {vocab_size}")
        if max_tokens < 2:
            raise ConfigError(f"tokenizer max_tokens must be >= 2 (CLS and one word), got {max_tokens}")
        if ngrams < 1:
            raise ConfigError(f"tokenizer ngrams must be >= 1, got {ngrams}")
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.ngrams = ngrams
        self.lowercase = lowercase

    def words(self, text: str) -> list[str]:
        """The words of ``text``, in order."""
        return _WORD.findall(text.lower() if self.lowercase else text)

    def terms(self, text: str) -> list[str]:
        """Words, then the 2- to ``ngrams``-word runs (space-joined), before truncation."""
        words = self.words(text)
        grams = [" ".join(words[i : i + n]) for n in range(2, self.ngrams + 1) for i in range(len(words) - n + 1)]
        return words + grams

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``ids`` ``[B, max_tokens]`` long (CLS, term ids, then PAD) and ``mask`` ``[B, max_tokens]`` bool."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, got one str")
        ids = torch.full((len(texts), self.max_tokens), PAD_ID, dtype=torch.long)
        for row, text in enumerate(texts):
            terms = self.terms(text)[: self.max_tokens - 1]
            ids[row, : len(terms) + 1] = torch.tensor(
                [CLS_ID] + [_hash64(term) % (self.vocab_size - 2) + 2 for term in terms], dtype=torch.long
            )
        return ids, ids != PAD_ID

    def to_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "max_tokens": self.max_tokens, "ngrams": self.ngrams,
                "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> HashingTokenizer:
        unknown = sorted(set(state) - {"vocab_size", "max_tokens", "ngrams", "lowercase"})
        if unknown:
            raise ConfigError(f"tokenizer state has unknown keys {unknown}")
        return cls(**state)


class NoteEncoder(TokenEncoder):
    """Transformer over hashed note tokens, CLS-pooled (see the module docstring); owns its tokenizer."""

    def __init__(
        self,
        vocab_size: int = 8192,
        max_tokens: int = 128,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.tokenizer = HashingTokenizer(vocab_size, max_tokens)
        self.dim = dim
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.register_buffer("pos_embed", sincos_embedding(max_tokens, dim), persistent=False)
        self._init_trunk(dim, depth, heads, mlp_ratio, dropout, "mean", False)
        self.apply(init_weights)
        # Words at the scale of the sin-cos positions (|pe| <= 1): with ViT's std 0.02 a word is
        # drowned by its position and a small model learns several times slower.
        nn.init.trunc_normal_(self.token_embed.weight, std=1.0, a=-2.0, b=2.0)
        with torch.no_grad():
            self.token_embed.weight[PAD_ID].zero_()

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Tokenize ``texts``: ``ids`` and ``mask`` ``[B, max_tokens]`` on the module's device."""
        ids, mask = self.tokenizer.encode(texts)
        device = self.token_embed.weight.device
        return ids.to(device), mask.to(device)

    def forward_tokens(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encoded tokens ``[B, N, dim]`` (zero at padding; position 0 is CLS) and ``mask [B, N]``."""
        if ids.ndim != 2 or ids.shape[1] > self.tokenizer.max_tokens:
            raise ValueError(f"expected ids [batch, <= {self.tokenizer.max_tokens}], got shape {tuple(ids.shape)}")
        mask = mask.to(dtype=torch.bool)
        if not bool(mask[:, 0].all()):
            raise ValueError("every row needs its CLS token at position 0 (mask[:, 0] must be True)")
        tokens = self.token_embed(ids) + self.pos_embed[: ids.shape[1]]
        tokens, _ = self.encode(tokens, mask)
        return tokens * mask[..., None].to(tokens.dtype), mask

    def forward_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Note embedding ``[B, dim]``: the CLS output."""
        return self.forward_tokens(ids, mask)[0][:, 0]

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.forward_features(ids, mask)


class HuggingFaceNoteEncoder(nn.Module):
    """A local Hugging Face encoder (e.g. a clinical BERT folder) with a linear projection to ``dim``.

    ``freeze``: the Hugging Face weights get no gradient and stay in eval mode (no dropout); only
    the projection trains. ``pool``: ``"cls"`` (position 0) or ``"mean"`` (over non-padding tokens;
    usually the better choice for a frozen model). ``max_tokens``: texts are truncated to this many
    of the model's own tokens.
    """

    def __init__(self, path: str | Path, dim: int = 128, max_tokens: int = 128, freeze: bool = True,
                 pool: str = "mean"):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' or 'mean', got {pool!r}")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: not a Hugging Face model folder (no config.json)")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise ConfigError(
                f"{path}: the Hugging Face note encoder needs the optional package 'transformers' ({one_line(err)})"
            ) from err
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{path}: cannot load the Hugging Face model: {one_line(err)}") from err
        self.dim = dim
        self.max_tokens = max_tokens
        self.freeze = freeze
        self.pool = pool
        self.proj = nn.Linear(self.backbone.config.hidden_size, dim)
        init_weights(self.proj)
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> HuggingFaceNoteEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Tokenize ``texts`` with the model's tokenizer: ``ids`` and ``mask`` ``[B, N <= max_tokens]``."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        device = self.proj.weight.device
        return batch["input_ids"].to(device), batch["attention_mask"].to(device=device, dtype=torch.bool)

    def forward_tokens(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Projected hidden states ``[B, N, dim]`` (zero at padding) and ``mask [B, N]`` bool."""
        mask = mask.to(dtype=torch.bool)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        tokens = self.proj(hidden.to(self.proj.weight.dtype))
        return tokens * mask[..., None].to(tokens.dtype), mask

    def forward_features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Note embedding ``[B, dim]``: position 0 (``pool="cls"``) or the mean over the tokens."""
        tokens, mask = self.forward_tokens(ids, mask)
        return tokens[:, 0] if self.pool == "cls" else masked_mean(tokens, mask)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.forward_features(ids, mask)


@register_model("note_encoder")
def note_encoder(
    *,
    vocab_size: int = 8192,
    max_tokens: int = 128,
    dim: int = 128,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> NoteEncoder:
    """Dependency-free note encoder: hashed words and word bigrams, a small CLS-pooled transformer."""
    return NoteEncoder(vocab_size, max_tokens, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)


@register_model("hf_note_encoder")
def hf_note_encoder(
    *, path: str = "", dim: int = 128, max_tokens: int = 128, freeze: bool = True, pool: str = "mean"
) -> HuggingFaceNoteEncoder:
    """A local Hugging Face model folder ``path`` (required) projected to ``dim``."""
    if not path:
        raise ConfigError("hf_note_encoder needs path=<a local Hugging Face model folder>")
    return HuggingFaceNoteEncoder(path, dim=dim, max_tokens=max_tokens, freeze=freeze, pool=pool)


# ----------------------------------------------------------------------------- test configs

_EXAMPLE_NOTES = ("LV normal size, EF 55%.", "AF with rapid ventricular response; EF 35%.")


def note_example(model: NoteEncoder | HuggingFaceNoteEncoder) -> tuple[tuple, dict]:
    """Two short notes, tokenized by the model's own tokenizer: ``((ids, mask), {})``."""
    return model.encode_texts(list(_EXAMPLE_NOTES)), {}


register_test("note_encoder", example=note_example, vocab_size=64, max_tokens=16, dim=16, depth=1, heads=2)
register_test("hf_note_encoder", example=note_example, requires=("transformers",), required=("path",), dim=16,
              max_tokens=16)
