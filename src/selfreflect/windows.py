"""Snippet windows: a chunk's text cut into the windows its snippet is
chosen from, and their vectors, kept in the chunk's payload.

A search shows the window of each result that matched best
(:func:`selfreflect.search.snippets`); where no window holds half of the
query's words, the one closest in meaning. The bundled model computes a
hidden state per word-piece of a chunk when it embeds the chunk: pooled over
each window's word-pieces, they give the windows' vectors with no model call
more (:meth:`selfreflect.embed.OnnxEmbedder.embed_windows`). The importer
keeps them in the payload (``FIELD``), a few hundred bytes a chunk
(:func:`pack`), so search places such a snippet without the model.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

WIDTH = 240  # characters of a snippet, and of a window
FIELD = "windows"  # the payload field (not indexed, not in text_hash)


def flatten(text: str) -> str:
    """``text`` with each run of whitespace one space: what snippets are cut from."""
    return " ".join(text.split())


def tiles(flat: str, width: int = WIDTH) -> list[tuple[int, str]]:
    """``flat`` cut into windows of up to ``width`` characters at spaces:
    where each begins in ``flat``, and its text."""
    out, begin = [], 0
    while begin < len(flat):
        end = begin + width
        if end < len(flat):
            cut = flat.rfind(" ", begin, end)
            end = cut if cut > begin + width // 2 else end
        piece = flat[begin:end]
        if piece.strip():
            out.append((begin + len(piece) - len(piece.lstrip()), piece.strip()))
        begin = end
    return out


@dataclass(frozen=True)
class Windows:
    """The vectors of a text's windows (:func:`tiles` of its :func:`flatten`):
    where each begins, and its vector (a row).

    From the model (:meth:`selfreflect.embed.OnnxEmbedder.embed_windows`)
    they are unit vectors; from a payload (:func:`unpack`), vectors whose dot
    product with a query vector is the window's cosine to the query less a
    constant of the text, so they rank the windows as the cosine does.
    """

    starts: list[int]
    vectors: np.ndarray


def pack(windows: Windows) -> dict[str, Any]:
    """``windows`` as a payload value, about 50 bytes a window: each vector
    less the mean of the text's windows, as the sign of each dimension (1
    bit) and the mean size of its dimensions (the scale that best restores
    it from the signs). The mean is left out: it adds the same to every
    window's score. docs/benchmarks.md ("Snippet windows") measured how often
    this places the same snippet as the full vectors."""
    vectors = np.asarray(windows.vectors, dtype=np.float32)
    centred = vectors - vectors.mean(axis=0)
    scales = np.abs(centred).mean(axis=1)
    return {
        "starts": list(windows.starts),
        "dim": int(vectors.shape[1]),
        "signs": base64.b64encode(np.packbits(centred > 0, axis=1).tobytes()).decode("ascii"),
        "scales": [float(f"{x:.4g}") for x in scales],
    }


def unpack(value: Any, dim: int) -> Windows | None:
    """The windows ``pack`` stored, their vectors ``dim`` long, or ``None``:
    none stored (a chunk written by an older version, or by an embedder that
    gives no word-piece states), or not of this model (another ``dim``)."""
    if not isinstance(value, dict) or value.get("dim") != dim:
        return None
    try:
        starts = [int(x) for x in value["starts"]]
        scales = np.asarray(value["scales"], dtype=np.float32)
        bits = np.frombuffer(base64.b64decode(value["signs"], validate=True), dtype=np.uint8)
        signs = np.unpackbits(bits.reshape(len(starts), (dim + 7) // 8), axis=1, count=dim)
    except (KeyError, TypeError, ValueError):
        return None
    if scales.shape != (len(starts),):
        return None
    return Windows(starts, (signs.astype(np.float32) * 2 - 1) * scales[:, None])
