"""Embed: text to dense vectors with the bundled all-MiniLM-L6-v2 (int8 ONNX),
or with Voyage AI's API when the settings choose it (:func:`make_embedder`).

The model ships inside the package (``models/``), so nothing is downloaded at
run time. Loading the model is an explicit step (:meth:`OnnxEmbedder.load`),
so constructing one is cheap and ``--help``/``status`` stay instant.
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from selfreflect.errors import ConfigError, EmbedderUnavailable
from selfreflect.parse import clean_text
from selfreflect.settings import Settings
from selfreflect.windows import Windows, flatten, tiles

BUNDLED_MODEL = "all-MiniLM-L6-v2-int8"

# Word-pieces per model call (padding included). Measured here on 2 cores
# (arena on, memory pattern off): one 256-word-piece text a call ran 11.5-11.8k
# word-pieces/s at 117 MB peak RSS, two a call 11.1-11.3k at 135 MB, and
# 16 x 256 (before) 4.9k at 440 MB: big calls cost memory and buy no speed.
EMBED_TOKENS = 256


class Embedder(Protocol):
    """What the pipeline and the search core need from an embedding model."""

    name: str
    dim: int
    max_tokens: int  # word-pieces of the bundled tokenizer a chunk may hold, [CLS] and [SEP] included
    batch_tokens: int  # padded word-pieces per call of embed_batched

    def load(self) -> None: ...

    def unload(self) -> None:
        """Hand back what ``load`` took (the next call loads it again)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts to be found: chunks, reflections, snippet windows."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of search queries (some models embed a query unlike a document)."""
        ...


@runtime_checkable
class WindowEmbedder(Protocol):
    """An embedder that also gives the vectors of each text's snippet windows
    from the call that embeds the text (:mod:`selfreflect.windows`). Optional:
    the bundled model does; Voyage AI's API gives no word-piece states."""

    def embed_windows(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Windows]]: ...


class BundledTokens:
    """Counting and placing word-pieces with the bundled model's tokenizer
    (``_tokenizer``, set by ``load``): chunks are cut the same whichever
    model embeds them."""

    _tokenizer: Any

    def load(self) -> None: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-pieces of each text, without [CLS] and [SEP]."""
        self.load()
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each word-piece of ``text``, in order."""
        self.load()
        return list(self._tokenizer.encode(clean_text(text), add_special_tokens=False).offsets)


def bundled_model_dir() -> Path:
    """The folder of the model shipped inside the package."""
    return Path(str(resources.files("selfreflect") / "models" / BUNDLED_MODEL))


def bundled_tokenizer(model_dir: Path) -> Any:
    """The bundled model's word-piece tokenizer, neither padding nor truncating."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json as shipped pads and truncates to 128: set both ourselves.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def make_embedder(settings: Settings) -> Embedder:
    """The embedder the settings choose (not loaded): the bundled model, or
    Voyage AI with ``PREFER_LOCAL_EMBEDDINGS=false``.

    Raises:
        ConfigError: Voyage AI is chosen without a key, or without the
            ``voyageai`` package.
    """
    if settings.prefer_local_embeddings:
        return OnnxEmbedder()
    if not settings.voyage_key:
        raise ConfigError(
            "PREFER_LOCAL_EMBEDDINGS=false embeds with Voyage AI: set VOYAGE_KEY to a Voyage AI API key, "
            "or PREFER_LOCAL_EMBEDDINGS=true for the bundled model"
        )
    if importlib.util.find_spec("voyageai") is None:
        raise ConfigError(
            "PREFER_LOCAL_EMBEDDINGS=false embeds with Voyage AI, which needs its client: "
            "pip install 'selfreflect[voyage]' (or pip install voyageai)"
        )
    return VoyageEmbedder(settings.voyage_key, settings.voyage_model, settings.voyage_url)


class Turns:
    """A lock taken in the order it was asked for: under a stream of searches,
    the importer's next batch still gets the model in its turn (a plain lock
    goes to whichever thread runs when it is freed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the next ticket to hand out
        self._serving = 0  # the ticket that holds the lock

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass
class OnnxEmbedder(BundledTokens):
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
    batch_tokens: int = EMBED_TOKENS
    name: str = "sentence-transformers/all-MiniLM-L6-v2 (int8 onnx)"
    dim: int = 384
    _session: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _run_options: Any = field(default=None, repr=False)
    # One model call at a time, in turn: each concurrent call holds its own
    # activation buffers (20 concurrent searches held 350 MB more than one),
    # and on a few cores calls side by side finish no sooner than calls in turn.
    _calls: Turns = field(default_factory=Turns, init=False, repr=False, compare=False)

    def load(self) -> None:
        if self._session is not None:
            return
        import onnxruntime as ort

        tokenizer = bundled_tokenizer(self.model_dir)
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
        # The runtime's threads spin for a while after each call, waiting for
        # the next: a search's engine query right after its embedding then
        # shares the 2 cores with them. Measured at 250k chunks: search()
        # p50 10.2 -> 8.1 ms, p95 12.5 -> 9.1 ms without spinning; a lone
        # query embedding 2.0 -> 2.8 ms; 512 chunks in batches of 32, 16.7 -> 17.0 s.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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

    def unload(self) -> None:
        """Drop the runtime's session: its weights and arena (about 45 MB
        after a backfill's batches), e.g. before a compaction's merges. Safe
        while other threads embed: the next call loads it again (0.1-0.3 s)."""
        with self._calls:
            self._session = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32, shape [n, dim])."""
        return self._embed(texts, windows=False)[0]

    def embed_windows(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Windows]]:
        """Unit vectors of texts, as :meth:`embed`, and of each text's snippet
        windows (:func:`selfreflect.windows.tiles`), from the same model call:
        the mean of the text's hidden states over each window's word-pieces.

        The word-pieces are placed by the tokenizer's character offsets in
        the whitespace-collapsed text, which it reads as the text itself
        (whitespace only separates word-pieces). Not so where the text holds
        whitespace the tokenizer drops instead (a form feed, a vertical tab,
        U+001C-U+001F, U+0085), or a lone surrogate: such a text gets no
        window vectors. Nor does
        a text with a window the model does not see whole (past
        ``max_tokens``): its windows are placed by search as before, all of
        them embedded alone, so their scores compare.
        """
        return self._embed(texts, windows=True)

    def _embed(self, texts: Sequence[str], windows: bool) -> tuple[np.ndarray, list[Windows]]:
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
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
        spans = self._window_spans(texts, encodings, seq) if windows else []
        with self._calls:
            self.load()  # unloaded by another thread since this call began
            (hidden,) = self._session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
                self._run_options,
            )
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            found = [self._pool(hidden[row], own) for row, own in enumerate(spans)]
            del hidden
        return unit_rows(pooled), found

    def _pool(self, hidden: np.ndarray, spans: list[tuple[int, int, int]]) -> Windows:
        """A text's window vectors: the mean of its hidden states over each window's word-pieces."""
        if not spans:
            return Windows([], np.zeros((0, self.dim), dtype=np.float32))
        return Windows([s for s, _, _ in spans], unit_rows(np.stack([hidden[a:b].mean(axis=0) for _, a, b in spans])))

    def _window_spans(self, texts: Sequence[str], encodings: list[Any], seq: int) -> list[list[tuple[int, int, int]]]:
        """For each text, its windows the model sees whole: (where the window
        begins in the collapsed text, its first word-piece, the one after its last)."""
        flats = [flatten(t) for t in texts]
        collapsed = self._tokenizer.encode_batch([clean_text(f) for f in flats])
        out: list[list[tuple[int, int, int]]] = []
        for flat, encoding, again in zip(flats, encodings, collapsed, strict=True):
            own: list[tuple[int, int, int]] = []
            # a lone surrogate (parse cleans them out of transcripts) would shift the offsets
            if again.ids == encoding.ids and clean_text(flat) == flat:
                seen = min(len(encoding.ids), seq) - 1  # [CLS] first, [SEP] last
                starts = [begin for begin, _ in again.offsets[1 : len(again.ids) - 1]]
                for begin, window in tiles(flat):
                    first = bisect.bisect_left(starts, begin) + 1
                    last = bisect.bisect_left(starts, begin + len(window)) + 1
                    own.append((begin, first, last))
            whole = all(first < last <= seen for _, first, last in own)
            out.append(own if whole else [])
        return out

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """The same as :meth:`embed`: this model embeds a query like any text."""
        return self.embed(texts)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (float32)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def embed_batched(embedder: Embedder, texts: Sequence[str], budget: int | None = None) -> np.ndarray:
    """Embed many texts in calls of at most ``budget`` padded word-pieces
    (default: the embedder's ``batch_tokens``), texts of similar length
    together; rows come back in the order given."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for group in _batches(embedder, texts, budget):
        out[group] = embedder.embed([texts[i] for i in group])
    return out


def embed_with_windows(
    embedder: Embedder, texts: Sequence[str], budget: int | None = None
) -> tuple[np.ndarray, list[Windows | None]]:
    """As :func:`embed_batched`, and each text's snippet window vectors where
    the embedder gives them (:class:`WindowEmbedder`), else ``None``."""
    if not isinstance(embedder, WindowEmbedder):
        return embed_batched(embedder, texts, budget), [None] * len(texts)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    found: list[Windows | None] = [None] * len(texts)
    for group in _batches(embedder, texts, budget):
        vectors, windows = embedder.embed_windows([texts[i] for i in group])
        out[group] = vectors
        for i, own in zip(group, windows, strict=True):
            found[i] = own
    return out, found


def _batches(embedder: Embedder, texts: Sequence[str], budget: int | None) -> Iterator[list[int]]:
    """Indexes of ``texts`` in groups of at most ``budget`` padded word-pieces, similar lengths together."""
    budget = budget or embedder.batch_tokens
    lengths = [min(n + 2, embedder.max_tokens) for n in embedder.count_tokens(texts)] if texts else []
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    group: list[int] = []
    for index in [*order, None]:
        if group and (index is None or (len(group) + 1) * lengths[index] > budget):
            yield group
            group = []
        if index is not None:
            group.append(index)


# Voyage AI's text models: their dimensions where it is not 1024, the default
# of every current one (https://docs.voyageai.com/docs/embeddings).
VOYAGE_DIMS = {"voyage-3-lite": 512, "voyage-code-2": 1536, "voyage-large-2": 1536}
# Texts and bundled word-pieces per request. Voyage AI takes up to 1,000 texts
# a request, and 120k tokens (voyage-4-large, voyage-3-large, voyage-code-3),
# 320k (voyage-4, voyage-3.5) or 1M (the lite models)
# (https://docs.voyageai.com/reference/embeddings-api); its tokenizer is not
# ours, so stay far under both.
VOYAGE_TEXTS = 128
VOYAGE_TOKENS = 60_000


@dataclass
class VoyageEmbedder(BundledTokens):
    """Embeddings from Voyage AI's API, through its official client
    (``voyageai``; ``pip install 'selfreflect[voyage]'``).

    Chunks are cut as for the bundled model, with its tokenizer, so a store
    holds the same chunks whichever model embedded them. The text leaves the
    machine (after redaction): see the README.

    Args:
        key: the API key (sent as ``Authorization: Bearer``; never logged).
        model: a Voyage AI text embedding model.
        base_url: another endpoint speaking the same API (default: the client's).
        timeout: seconds a request may take.
        attempts: requests the client makes in all when it meets a rate limit,
            a 502-504 or a timeout, waiting about 1 s, 2 s, 4 s, ... between them.
    """

    key: str = field(repr=False)
    model: str = "voyage-4-lite"
    base_url: str | None = None
    timeout: float = 30.0
    attempts: int = 3
    max_tokens: int = 256
    batch_tokens: int = VOYAGE_TEXTS * 256  # a whole batch of chunks in one request
    model_dir: Path = field(default_factory=bundled_model_dir)  # its tokenizer sizes the chunks
    name: str = field(init=False)
    dim: int = field(init=False)
    _client: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = f"voyageai/{self.model}"  # recorded with the store: another model needs a reindex
        self.dim = VOYAGE_DIMS.get(self.model, 1024)

    def load(self) -> None:
        if self._client is not None:
            return
        try:
            import voyageai
        except ImportError as exc:
            raise ConfigError(f"Voyage AI needs its client: pip install 'selfreflect[voyage]' ({exc})") from exc
        self._tokenizer = bundled_tokenizer(self.model_dir)
        self._client = voyageai.Client(
            api_key=self.key, max_retries=self.attempts, timeout=self.timeout, base_url=self.base_url
        )

    def unload(self) -> None:
        """Nothing to hand back: the model runs at Voyage AI."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "document")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "query")

    def _embed(self, texts: Sequence[str], input_type: str) -> np.ndarray:
        """Unit vectors, one row per text, in requests within Voyage AI's limits.

        Raises:
            EmbedderUnavailable: a request failed (what happened and what to do).
        """
        self.load()
        cleaned = [clean_text(t) or " " for t in texts]  # the API takes no empty text
        rows: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)]
        start, tokens = 0, 0
        for end, n in enumerate([*self.count_tokens(cleaned), 0]):
            last = end == len(cleaned)
            if end > start and (last or end - start >= VOYAGE_TEXTS or tokens + n > VOYAGE_TOKENS):
                rows.append(self._request(cleaned[start:end], input_type))
                start, tokens = end, 0
            tokens += n
        return unit_rows(np.concatenate(rows))

    def _request(self, texts: list[str], input_type: str) -> np.ndarray:
        from voyageai import error

        try:
            answer = self._client.embed(texts, model=self.model, input_type=input_type, truncation=True)
        except error.VoyageError as exc:
            raise EmbedderUnavailable(self._explain(exc)) from exc
        vectors = np.asarray(answer.embeddings, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise EmbedderUnavailable(
                f"embedding failed: Voyage AI answered vectors of shape {vectors.shape} for {len(texts)} texts, "
                f"not the {self.dim} dimensions selfreflect expects of {self.model!r}: set VOYAGE_MODEL to one of "
                "Voyage AI's current text models (voyage-4-lite, voyage-4, voyage-4-large, voyage-code-3)"
            )
        return vectors

    def _explain(self, exc: Exception) -> str:
        """What went wrong, for a person (the key itself never appears)."""
        from voyageai import error

        status = getattr(exc, "http_status", None)
        said = getattr(exc, "user_message", None) or str(exc)
        where = f"Voyage AI at {self.base_url}" if self.base_url else "Voyage AI"
        if isinstance(exc, error.AuthenticationError):
            why = f"{where} refused the API key ({status}: {said}): check VOYAGE_KEY"
        elif isinstance(exc, error.RateLimitError):
            why = f"{where} is over its rate limit ({status}: {said})"
        elif isinstance(exc, error.Timeout):
            why = f"{where} did not answer within {self.timeout:g} s"
        elif isinstance(exc, error.APIConnectionError):
            why = f"cannot reach {where} ({said})"
        elif isinstance(exc, (error.InvalidRequestError, error.MalformedRequestError)):
            why = f"{where} refused the request ({status}: {said}): check VOYAGE_MODEL={self.model!r}"
        else:
            why = f"{where} failed ({status or type(exc).__name__}: {said})"
        return f"embedding failed: {why}"
