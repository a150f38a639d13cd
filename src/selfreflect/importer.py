"""The importer: runs the pipeline over transcripts and commits positions.

discover -> tail -> parse -> assemble -> redact -> chunk -> embed -> store,
then state. Positions are saved only after the store confirmed the batch,
and point ids are deterministic, so a crash at any moment loses nothing and
duplicates nothing: the next run re-reads from the last saved position and
overwrites what it had already written.

Two more sources go the same way from their own readers: the prompts of
Claude Code's ``history.jsonl`` (:mod:`selfreflect.history`, tailed like a
transcript, kind ``history``) and a Claude.ai export
(:mod:`selfreflect.export`, read once as a stream, no position: its ids
alone make a second import overwrite the first).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from selfreflect.assemble import Assembler, Exchange, Part, prompt_digest, prompt_key
from selfreflect.chunk import Chunk, chunk_exchange, seal
from selfreflect.discover import ACTIVE_SECONDS, TranscriptFile, discover
from selfreflect.embed import Embedder, embed_batched
from selfreflect.export import SOURCE, Export
from selfreflect.history import FILE as HISTORY_FILE
from selfreflect.history import HistoryEntry, parse_entry
from selfreflect.lexical import lexical_text
from selfreflect.parse import BadLine, parse_line
from selfreflect.projects import folder_name, project_path, repository_root
from selfreflect.redact import redact_part
from selfreflect.settings import Settings
from selfreflect.state import State, TranscriptPosition
from selfreflect.store import Record, Store
from selfreflect.system import path_name
from selfreflect.tail import FileIdentity, read_lines

log = logging.getLogger("selfreflect")

ID_NAMESPACE = uuid.UUID("6f1c3c7e-5b7a-4c1e-9a55-2f4f0d1c5e11")


@dataclass
class ImportSummary:
    """What one pass did (the CLI prints it, the daemon exports it)."""

    files: int = 0
    files_read: int = 0
    lines: int = 0
    chunks: int = 0
    bad_lines: int = 0
    oversized_lines: int = 0
    failed_files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not transcripts we can read
    seconds: float = 0.0
    prompts: int = 0  # new lines of history.jsonl (also counted in lines)
    conversations: int = 0  # conversations of a Claude.ai export

    def add(self, other: ImportSummary) -> None:
        """Count another pass into this one (the daemon's running totals)."""
        self.files_read += other.files_read
        self.lines += other.lines
        self.prompts += other.prompts
        self.chunks += other.chunks
        self.bad_lines += other.bad_lines
        self.oversized_lines += other.oversized_lines
        self.seconds += other.seconds


def point_id(transcript_key: str, session_id: str, exchange: str, ordinal: int) -> str:
    """Deterministic: the same chunk of the same exchange always gets the same id."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{session_id}|{transcript_key}|{exchange}|{ordinal}"))


@dataclass(frozen=True)
class Source:
    """Where an exchange's chunks come from, as their payload tells it.

    Attributes:
        transcript: what a citation names: a transcript's path, ``history.jsonl``'s,
            an export conversation's ``<export>:<uuid>``.
        key: the stable name in point ids (a transcript's path under ``projects/``).
        kind: ``conversation`` or ``history``.
        project_path: the project (:mod:`selfreflect.projects`).
        claude_project: Claude Code's folder name for it (``""``: none).
        started_in: where the session was started (``""``: unknown).
    """

    transcript: str
    key: str
    kind: str
    project_path: str
    claude_project: str = ""
    started_in: str = ""


class Importer:
    """Indexes transcripts into a store.

    Args:
        settings: the settings (folders, batch size, line limit).
        store: an open store.
        embedder: a loaded embedder (its name and dim match the store).
        state: the positions (saved after every confirmed batch).
    """

    def __init__(self, settings: Settings, store: Store, embedder: Embedder, state: State) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.state = state
        if state.bind(store.id) or not state.path.exists():  # a new store is filled from the start
            state.save()
        self.budget = embedder.max_tokens - 2  # [CLS] and [SEP]
        self.embed_seconds = 0.0

    def run(self, progress: Callable[[TranscriptFile], None] | None = None) -> ImportSummary:
        """Catch up on every transcript: index whatever is not indexed yet."""
        started = time.monotonic()
        summary = ImportSummary()

        def skipped(path: str, why: str) -> None:
            log.warning("%s: skipped: %s", path, why)
            summary.skipped.append((path, why))

        files = discover(self.settings.projects_dir, report=skipped)
        summary.files = len(files)
        for transcript in files:
            self.import_file(transcript, summary)
            self.store.release_memory()
            if progress:
                progress(transcript)
        self.import_history(summary)
        summary.seconds = time.monotonic() - started
        return summary

    def import_file(
        self,
        transcript: TranscriptFile,
        summary: ImportSummary,
        max_batches: int | None = None,
        batch_chunks: int | None = None,
        should_yield: Callable[[], bool] | None = None,
    ) -> bool:
        """Index what is new in one transcript.

        A file that vanished or cannot be read is reported in
        ``summary.failed_files``; nothing else is lost.

        Args:
            transcript: the file.
            summary: counts to add to.
            max_batches: stop after this many committed batches (the daemon
                interleaves a long backfill with live files this way).
            batch_chunks: chunks per batch (default: the CHUNK_SIZE setting).
            should_yield: asked after every committed batch: ``True`` stops
                the read there (a live session is waiting).

        Returns:
            ``True`` when it stopped early and more is left to read.
        """
        try:
            return self._import(
                transcript, summary, max_batches, batch_chunks or self.settings.chunk_size, should_yield
            )
        except OSError as exc:
            log.warning("%s: cannot read: %s", transcript.path, exc.strerror or exc)
            summary.failed_files.append(str(transcript.path))
            return False

    def _import(
        self,
        transcript: TranscriptFile,
        summary: ImportSummary,
        max_batches: int | None,
        limit: int,
        should_yield: Callable[[], bool] | None,
    ) -> bool:
        path = str(transcript.path)
        identity = FileIdentity.of(transcript.path)
        position = self.state.get(path)
        if position.inode and (
            (identity.inode, identity.device) != (position.inode, position.device) or identity.size < position.end
        ):
            log.info("%s: replaced or truncated, indexing it again", path)
            self.store.delete_transcript(path)
            position = TranscriptPosition()
        if position.inode and is_current(position, identity.size, identity.mtime):
            return False  # not touched since the last read
        summary.files_read += 1
        seen_end = position.end
        position.final = position.done = False  # until this read reaches the end of the file
        assembler = Assembler.restore(transcript.session_id, transcript.agent_id, position.context)
        batch = Batch(transcript, identity, position, seen_end)
        # A quiet file will not finish its last line: take it if it is whole.
        quiet = not transcript.active(time.time())
        lines = read_lines(transcript.path, position.offset, position.line, self.settings.max_line_bytes, final=quiet)
        batches = 0
        tail_taken = False  # the unterminated last line of a quiet file was a whole record
        for line in lines:
            new = line.terminated and line.end > seen_end
            if line.terminated:  # never move past an unterminated line
                batch.end, batch.end_line = line.end, line.number + 1
                summary.lines += new
            if line.oversized:
                if new:
                    position.oversized_lines += 1
                    summary.oversized_lines += 1
                    log.warning("%s:%d: line longer than %.0f MB skipped", path, line.number, self.settings.max_line_mb)
                continue
            record = parse_line(line.data)
            if isinstance(record, BadLine):
                if new:
                    position.bad_lines += 1
                    summary.bad_lines += 1
                    log.warning("%s:%d: bad line skipped (%s)", path, line.number, record.reason)
                continue
            tail_taken = not line.terminated
            if record is None:
                continue
            if not position.first_cwd and isinstance(record.get("cwd"), str) and record["cwd"].strip():
                position.first_cwd = record["cwd"]  # where the session started: its project
            closed = assembler.feed(line.number, line.start, record)
            if closed is not None:
                batch.add(closed, self._chunk(closed))
            if batch.size + len(assembler.open.parts if assembler.open else ()) >= limit:
                self._seal_open(assembler, batch)
                if batch.size >= limit:
                    self._commit(batch, assembler, summary)
                    batch = Batch(transcript, identity, position, seen_end, batch.end, batch.end_line)
                    batches += 1
                    if (max_batches is not None and batches >= max_batches) or (should_yield and should_yield()):
                        return True
        if assembler.open is not None:
            final = self._seal_open(assembler, batch)
            batch.add(assembler.open, final)  # the tail: written now, rebuilt on the next read
        position.final, position.done = quiet, True
        unfinished = batch.end < identity.size and not tail_taken
        position.held_back = ("torn" if quiet else "writing") if unfinished else ""
        self._commit(batch, assembler, summary)
        return False

    def _seal_open(self, assembler: Assembler, batch: Batch) -> list[Chunk]:
        """Move the final chunks of the open exchange into the batch and drop
        their parts; return the chunks of what stays open."""
        exchange = assembler.open
        if exchange is None or not exchange.parts:
            return []
        chunks = self._chunk(exchange)
        done = seal(exchange, chunks)
        if done:
            batch.add(exchange, chunks[:done])
            rest = exchange.parts[chunks[done].first_part :]
            exchange.parts = rest
            exchange.ordinal_base += done
            exchange.resume_offset, exchange.resume_line = rest[0].offset, rest[0].line_start
        return chunks[done:]

    def _chunk(self, exchange: Exchange) -> list[Chunk]:
        """Chunks of ``exchange``, cut from its redacted text: a secret is found in
        the whole text of a part, before a chunk boundary could split it."""
        masked = replace(exchange, parts=[replace(p, text=redact_part(p.text)) for p in exchange.parts])
        return chunk_exchange(masked, self.budget, self.embedder.count_tokens, self.embedder.token_spans)

    def _commit(self, batch: Batch, assembler: Assembler, summary: ImportSummary) -> None:
        """Write the batch, then (only then) save the read position."""
        transcript, position = batch.transcript, batch.position
        folder = transcript.key.split("/", 1)[0]
        records = []
        for read, chunk in batch.chunks:
            started = project_path(position.first_cwd or read.cwd, folder)
            source = Source(
                str(transcript.path), transcript.key, "conversation", self._project(started), folder, started
            )
            records.append(self._record(source, read, chunk))
        summary.chunks += self._write(records)
        for exchange, last in batch.reread.items():
            # an exchange read before may have been cut into fewer chunks now
            self.store.delete_exchange_tail(str(transcript.path), exchange, last + 1)
        open_exchange = assembler.open
        if open_exchange is not None:
            position.offset, position.line = open_exchange.resume_offset, open_exchange.resume_line
        else:
            position.offset, position.line = batch.end, batch.end_line
        sealed = open_exchange is not None and open_exchange.resume_offset != open_exchange.start_offset
        position.context = assembler.snapshot() if sealed else None
        position.end = max(batch.end, position.end)
        position.inode, position.device = batch.identity.inode, batch.identity.device
        position.size, position.mtime = batch.identity.size, batch.identity.mtime
        self.state.set(str(transcript.path), position)
        self.state.save()

    def _write(self, records: list[tuple[Record, str]]) -> int:
        """Embed and write the records (with their texts) that are wanted and
        not in the store as they are; returns how many were written."""
        records = [(r, text) for r, text in records if self._wanted(r.payload)]
        known = self.store.text_hashes([r.id for r, _ in records])
        changed = [(r, text) for r, text in records if known.get(r.id) != r.payload["text_hash"]]
        step = self.settings.chunk_size
        for i in range(0, len(changed), step):
            part = changed[i : i + step]
            started = time.perf_counter()
            vectors = embed_batched(self.embedder, [text for _, text in part]).tolist()
            self.embed_seconds += time.perf_counter() - started
            self.store.upsert([Record(r.id, v, r.lexical, r.payload) for (r, _), v in zip(part, vectors, strict=True)])
        return len(changed)

    def _project(self, started: str) -> str:
        """The project of a session started in ``started``: the repository's
        main working tree when grouping repositories, else the folder."""
        return (repository_root(started) if self.settings.group_repositories else None) or started

    def _wanted(self, payload: dict[str, Any]) -> bool:
        """Not forgotten (``selfreflect forget``), and in a project the
        settings include and do not exclude."""
        if self.state.forgotten(payload):
            return False
        names = (payload["project_path"], payload["project"], payload["claude_project"])
        include, exclude = self.settings.include_projects, self.settings.exclude_projects
        if include and not any(fnmatch.fnmatchcase(n, os.path.expanduser(g)) for g in include for n in names):
            return False
        return not any(fnmatch.fnmatchcase(n, os.path.expanduser(g)) for g in exclude for n in names)

    def _record(self, source: Source, exchange: Exchange, chunk: Chunk) -> tuple[Record, str]:
        text = chunk.text  # cut from redacted parts (_chunk)
        payload = {
            "kind": source.kind,
            "project": path_name(source.project_path),
            "project_path": source.project_path,
            "claude_project": source.claude_project,
            "started_in": source.started_in,
            "cwd": exchange.cwd,
            "session_id": exchange.session_id,
            "transcript": source.transcript,
            "line_start": chunk.line_start,
            "line_end": chunk.line_end,
            "timestamp": exchange.timestamp or None,
            "git_branch": exchange.git_branch,
            "sidechain": exchange.sidechain,
            "thread": "sidechain" if exchange.sidechain or exchange.agent_id else "main",
            "agent_id": exchange.agent_id,
            "exchange": exchange.key,
            "ordinal": chunk.ordinal,
            "text": text,
            "tools": list(chunk.tools),
            "files": list(chunk.files),
            "file_suffixes": sorted({s for f in chunk.files for s in path_suffixes(f)}),
            # the prompt that opens the exchange, in its project: a history.jsonl entry of the same
            # prompt is then not shown beside it (selfreflect.search)
            "prompt_key": prompt_key(source.project_path, exchange.prompt),
        }
        digest = hashlib.sha1(repr(sorted(payload.items())).encode("utf-8", "replace")).hexdigest()
        payload["text_hash"] = digest
        pid = point_id(source.key, exchange.session_id, exchange.key, chunk.ordinal)
        return Record(pid, (), lexical_text(text), payload), text

    # -- history.jsonl -------------------------------------------------------

    def import_history(
        self,
        summary: ImportSummary,
        max_batches: int | None = None,
        batch_chunks: int | None = None,
        should_yield: Callable[[], bool] | None = None,
    ) -> bool:
        """Index the prompts of ``history.jsonl`` not indexed yet (when the
        settings index it). Incremental like a transcript: from the saved
        byte offset, a file replaced or cut is indexed again.

        Arguments and answer as :meth:`import_file`.
        """
        path = self.settings.history_file
        if not self.settings.index_history or not path.is_file():
            return False
        try:
            return self._import_history(
                path, summary, max_batches, batch_chunks or self.settings.chunk_size, should_yield
            )
        except OSError as exc:
            log.warning("%s: cannot read: %s", path, exc.strerror or exc)
            summary.failed_files.append(str(path))
            return False

    def history_changed(self) -> bool:
        """``history.jsonl`` has lines not indexed yet (when it is indexed)."""
        path = self.settings.history_file
        try:
            identity = FileIdentity.of(path) if self.settings.index_history else None
        except OSError:
            return False
        known = self.state.positions.get(str(path))
        return identity is not None and (known is None or not is_current(known, identity.size, identity.mtime))

    def _import_history(
        self,
        path: Path,
        summary: ImportSummary,
        max_batches: int | None,
        limit: int,
        should_yield: Callable[[], bool] | None,
    ) -> bool:
        key = str(path)
        identity = FileIdentity.of(path)
        position = self.state.get(key)
        if position.inode and (
            (identity.inode, identity.device) != (position.inode, position.device) or identity.size < position.end
        ):
            log.info("%s: replaced or truncated, indexing it again", path)
            self.store.delete_transcript(key)
            position = TranscriptPosition()
        if position.inode and is_current(position, identity.size, identity.mtime):
            return False
        quiet = time.time() - identity.mtime >= ACTIVE_SECONDS
        seen_end, batches = position.end, 0
        records: list[tuple[Record, str]] = []
        position.final = position.done = False
        for line in read_lines(path, position.offset, position.line, self.settings.max_line_bytes, final=quiet):
            new = line.terminated and line.end > seen_end
            record = None if line.oversized else parse_line(line.data)
            if isinstance(record, dict):
                entry = parse_entry(record, self.settings.claude_dir)
                records += self._history_records(key, line.number, entry) if entry else []
            elif new and (line.oversized or isinstance(record, BadLine)):
                position.bad_lines += 1
                summary.bad_lines += 1
                log.warning("%s:%d: bad line skipped", path, line.number)
            if not line.terminated:
                break  # a whole last line without its newline: indexed, read again once it ends
            summary.lines += new
            summary.prompts += new
            position.offset, position.line = line.end, line.number + 1
            position.end = max(position.end, line.end)
            if len(records) >= limit:
                self._commit_history(key, identity, position, records, summary)
                records, batches = [], batches + 1
                if (max_batches is not None and batches >= max_batches) or (should_yield and should_yield()):
                    return True
        position.final, position.done = quiet, True
        self._commit_history(key, identity, position, records, summary)
        return False

    def _history_records(self, path: str, line: int, entry: HistoryEntry) -> list[tuple[Record, str]]:
        started = project_path(entry.project, "") if entry.project else ""
        digest = prompt_digest(entry.prompt)
        exchange = Exchange(
            key=f"{entry.millis}-{digest}",
            start_offset=0,
            start_line=line,
            session_id=entry.session_id or "history",
            cwd=entry.project,
            git_branch="",
            timestamp=entry.timestamp or "",
            sidechain=False,
            agent_id=None,
            parts=[Part("user", entry.prompt, line, line)],
            prompt=digest,
        )
        project = self._project(started) if started else "(no project)"
        source = Source(path, HISTORY_FILE, "history", project, folder_name(started) if started else "", started)
        return [self._record(source, exchange, chunk) for chunk in self._chunk(exchange)]

    def _commit_history(
        self,
        path: str,
        identity: FileIdentity,
        position: TranscriptPosition,
        records: list[tuple[Record, str]],
        summary: ImportSummary,
    ) -> None:
        summary.chunks += self._write(records)
        position.inode, position.device = identity.inode, identity.device
        position.size, position.mtime = identity.size, identity.mtime
        self.state.set(path, position)
        self.state.save()

    # -- a Claude.ai export ---------------------------------------------------

    def import_export(self, path: Path, progress: Callable[[int, int], None] | None = None) -> ImportSummary:
        """Index the conversations of a Claude.ai / Claude Desktop export
        (``conversations.json`` or its ZIP), read as a stream. Importing the
        same export again writes nothing new (the ids are the conversations'
        and messages' own).

        Args:
            path: the export.
            progress: told (bytes read, bytes in all) after each conversation.

        Raises:
            ExportError: the file is not an export we can read.
        """
        started = time.monotonic()
        path = Path(os.path.abspath(path))  # cited from anywhere, read again by `show` and `reindex`
        summary = ImportSummary(files=1, files_read=1)
        records: list[tuple[Record, str]] = []
        with Export(path) as export:
            for conversation in export.conversations():
                source = Source(f"{path}:{conversation.uuid}", SOURCE, "conversation", conversation.project_path)
                for exchange in conversation.exchanges():
                    records += [self._record(source, exchange, chunk) for chunk in self._chunk(exchange)]
                summary.conversations += 1
                summary.lines += len(conversation.messages)
                if len(records) >= self.settings.chunk_size:
                    summary.chunks += self._write(records)
                    records = []
                    self.store.release_memory()
                if progress:
                    progress(export.bytes_read, export.size)
            summary.chunks += self._write(records)
        self.state.remember_export(str(path))
        summary.seconds = time.monotonic() - started
        return summary


def is_current(position: TranscriptPosition, size: int, mtime: float) -> bool:
    """The file was read to its end, all of it written, and has not changed since."""
    untouched = (size, mtime) == (position.size, position.mtime)
    return untouched and position.done and (position.end == size or position.final)


class Batch:
    """Chunks on their way to the store, and the file they came from."""

    def __init__(
        self,
        transcript: TranscriptFile,
        identity: FileIdentity,
        position: TranscriptPosition,
        seen_end: int,
        end: int | None = None,
        end_line: int | None = None,
    ) -> None:
        self.transcript = transcript
        self.identity = identity
        self.position = position
        self.seen_end = seen_end
        self.end = position.offset if end is None else end
        self.end_line = position.line if end_line is None else end_line
        self.chunks: list[tuple[Exchange, Chunk]] = []
        self.reread: dict[str, int] = {}  # exchange read before -> last ordinal now

    @property
    def size(self) -> int:
        return len(self.chunks)

    def add(self, exchange: Exchange, chunks: list[Chunk]) -> None:
        self.chunks += [(exchange, c) for c in chunks]
        if exchange.start_offset < self.seen_end:
            last = chunks[-1].ordinal if chunks else exchange.ordinal_base - 1
            self.reread[exchange.key] = max(last, self.reread.get(exchange.key, -1))


def path_suffixes(path: str) -> list[str]:
    """Every trailing part of a path, so ``src/app.py`` finds ``/home/x/proj/src/app.py``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return ["/".join(parts[i:]) for i in range(len(parts))]
