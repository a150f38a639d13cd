"""Embed: text to dense vectors with the bundled all-MiniLM-L6-v2 (int8 ONNX).

The model ships inside the package (``models/``), so nothing is downloaded at
run time. Loading the model is an explicit step (:meth:`OnnxEmbedder.load`),
so constructing one is cheap and ``--help``/``status`` stay instant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from selfreflect.parse import clean_text

BUNDLED_MODEL = "all-MiniLM-L6-v2-int8"


class Embedder(Protocol):
    """What the pipeline and the search core need from an embedding model."""

    name: str
    dim: int
    max_tokens: int

    def load(self) -> None: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def bundled_model_dir() -> Path:
    """The folder of the model shipped inside the package."""
    return Path(str(resources.files("selfreflect") / "models" / BUNDLED_MODEL))


@dataclass
class OnnxEmbedder:
    """Sentence embeddings: mean of the last hidden state over the attention
    mask, then L2-normalised (what sentence-transformers does).

    Args:
        model_dir: a folder with ``model.onnx`` and ``tokenizer.json``.
        max_tokens: word-pieces the model sees, [CLS] and [SEP] included;
            anything longer is cut, so the chunker sizes chunks to it.
        threads: onnxruntime intra-op threads (0: onnxruntime decides).
    """

    model_dir: Path = field(default_factory=bundled_model_dir)
    max_tokens: int = 256
    threads: int = 0
    name: str = "sentence-transformers/all-MiniLM-L6-v2 (int8 onnx)"
    dim: int = 384
    _session: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _run_options: Any = field(default=None, repr=False)

    def load(self) -> None:
        if self._session is not None:
            return
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # tokenizer.json as shipped pads and truncates to 128: set both ourselves.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # The arena keeps the buffers of the largest call for reuse. Calls are
        # small (EMBED_TOKENS), so that is bounded, and reuse beats malloc churn:
        # measured here, 2 x 256 word-pieces peaked at 144 MB RSS with the
        # arena and 176 MB without, at 11.4k vs 7.8k word-pieces/s.
        options.enable_cpu_mem_arena = True
        # The memory pattern planner keeps a second, pre-planned block per
        # input shape: 15 MB more RSS here, and the arena serves those anyway.
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        # Prepacked copies of the weights cost ~9 MB and bought no speed here.
        options.add_session_config_entry("session.disable_prepacking", "1")
        self._session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        # After each call the arena hands back the chunks it grew by, and the
        # next malloc_trim returns them to the system: about 15 MB less between
        # calls (the daemon's memory peak comes between calls, while the store
        # compacts), at about the same speed (docs/benchmarks.md).
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._tokenizer = tokenizer
        out_dim = self._session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int):
            self.dim = out_dim

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-pieces of each text, without [CLS] and [SEP]."""
        self.load()
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each word-piece of ``text``, in order."""
        self.load()
        return list(self._tokenizer.encode(clean_text(text), add_special_tokens=False).offsets)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32, shape [n, dim])."""
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts])  # the tokenizer refuses surrogates
        seq = min(self.max_tokens, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(texts), seq), dtype=np.int64)
        mask = np.zeros((len(texts), seq), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            piece = encoding.ids
            if len(piece) > seq:  # keep [SEP] last, as the model was trained
                piece = piece[: seq - 1] + piece[-1:]
            ids[row, : len(piece)] = piece
            mask[row, : len(piece)] = 1
        (hidden,) = self._session.run(
            None,
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            self._run_options,
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


# Word-pieces per model call (padding included). Measured here on 2 cores
# (arena on, memory pattern off): one 256-word-piece text a call ran 11.5-11.8k
# word-pieces/s at 117 MB peak RSS, two a call 11.1-11.3k at 135 MB, and
# 16 x 256 (before) 4.9k at 440 MB: big calls cost memory and buy no speed.
EMBED_TOKENS = 256


def embed_batched(embedder: Embedder, texts: Sequence[str], budget: int = EMBED_TOKENS) -> np.ndarray:
    """Embed many texts in calls of at most ``budget`` padded word-pieces,
    texts of similar length together; rows come back in the order given."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    if not texts:
        return out
    lengths = [min(n + 2, embedder.max_tokens) for n in embedder.count_tokens(texts)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    group: list[int] = []
    for index in [*order, None]:
        if group and (index is None or (len(group) + 1) * lengths[index] > budget):
            out[group] = embedder.embed([texts[i] for i in group])
            group = []
        if index is not None:
            group.append(index)
    return out
