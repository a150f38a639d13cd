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

Each batch also appends what is new of the transcript to its archive
(:mod:`selfreflect.archive`), saved with the positions. A transcript Claude
Code deleted keeps its chunks; when the index has not read all of it (a
``reindex``), the rest is read from the archive.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfreflect.archive import Archive, agent_meta, due
from selfreflect.assemble import Assembler, Exchange, Part, prompt_digest, prompt_key, title_of
from selfreflect.chunk import Chunk, chunk_exchange, seal
from selfreflect.discover import ACTIVE_SECONDS, TranscriptFile, describe
from selfreflect.embed import Embedder, embed_with_windows
from selfreflect.export import SOURCE, Export
from selfreflect.history import FILE as HISTORY_FILE
from selfreflect.history import HistoryEntry, parse_entry
from selfreflect.lexical import lexical_text
from selfreflect.parse import BadLine, parse_line
from selfreflect.projects import folder_name, project_path, repository_root
from selfreflect.redact import redact, redact_part
from selfreflect.settings import Settings
from selfreflect.state import ArchiveEntry, State, TranscriptPosition
from selfreflect.store import Record, Store
from selfreflect.system import path_name
from selfreflect.tail import FileIdentity, read_lines
from selfreflect.windows import FIELD, WIDTH, Windows, flatten, pack

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
        self.archive = Archive.of(settings)

    def locate(self, path: str) -> TranscriptFile | None:
        """The transcript at ``path``: on disk, else in the archive, else ``None``."""
        found = describe(self.settings.projects_dir, Path(path))
        if found is not None:
            return found
        key = self.archive.key_of(Path(path))
        return self.archive.archived(key) if key else None

    def needs_reading(self, transcript: TranscriptFile, now: float) -> bool:
        """It has lines not indexed yet, or bytes the archive should take now."""
        position = self.state.positions.get(str(transcript.path))
        if transcript.archived:
            return position is None or self._unread(position, self.state.archive.get(transcript.key))
        if position is None or not is_current(position, transcript.size, transcript.mtime):
            return True
        entry = self.state.archive.get(transcript.key)
        return due(entry, transcript.size, transcript.active(now)) and self._archivable(
            transcript, position, transcript.mtime
        )

    def run(self, progress: Callable[[TranscriptFile], None] | None = None) -> ImportSummary:
        """Catch up on every transcript: index whatever is not indexed yet."""
        started = time.monotonic()
        summary = ImportSummary()

        def skipped(path: str, why: str) -> None:
            log.warning("%s: skipped: %s", path, why)
            summary.skipped.append((path, why))

        files = self.archive.transcripts(report=skipped)
        summary.files = len(files)
        for transcript in files:
            self.import_file(transcript, summary)
            self.store.memory.after_batch()
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
        position = self.state.get(path)
        if transcript.archived:  # the file is gone: read on from its archive, never drop what is indexed
            entry = self.state.archive.get(transcript.key)
            if not self._unread(position, entry):
                return False
            identity = FileIdentity(entry.inode, entry.device, entry.archived, entry.mtime) if entry else None
            identity = identity or FileIdentity(0, 0, 0, transcript.mtime)
            quiet = True
            lines = self.archive.read_lines(
                transcript.key, position.offset, position.line, self.settings.max_line_bytes
            )
        else:
            identity = FileIdentity.of(transcript.path)
            position = self._unless_replaced(path, identity, position)
            if position.inode and is_current(position, identity.size, identity.mtime):
                # not touched since the last read: the archive may be behind (a session gone quiet)
                self._archive(transcript, identity, position)
                self.state.save()
                return False
            # A quiet file will not finish its last line: take it if it is whole.
            quiet = not transcript.active(time.time())
            lines = read_lines(
                transcript.path, position.offset, position.line, self.settings.max_line_bytes, final=quiet
            )
        summary.files_read += 1
        seen_end = position.end
        position.final = position.done = False  # until this read reaches the end of the file
        meta = agent_meta(transcript, self.archive)
        parent = meta.get("toolUseId") if isinstance(meta.get("toolUseId"), str) else None
        assembler = Assembler.restore(
            transcript.session_id, transcript.agent_id, position.context, parent, transcript.tool_results
        )
        batch = Batch(transcript, identity, position, seen_end)
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
            session = record.get("sessionId") if isinstance(record.get("sessionId"), str) else ""
            if session and not position.first_session:
                position.first_session = session
                batch.title(self.state, session)  # the summary lines above the first record
            if (titled := title_of(record)) is not None:
                batch.untitled.append((titled[0], redact(titled[1])))
                batch.title(self.state, session or position.first_session)
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
        batch.title(self.state, transcript.session_id)  # no record had a session id: the file's
        for session in batch.titled:  # a title line names the chunks written before it too
            self.store.set_title(session, self.state.titles[session][1])
        open_exchange = assembler.open
        if open_exchange is not None:
            position.offset, position.line = open_exchange.resume_offset, open_exchange.resume_line
        else:
            position.offset, position.line = batch.end, batch.end_line
        sealed = open_exchange is not None and open_exchange.resume_offset != open_exchange.start_offset
        position.context = assembler.snapshot(sealed)
        position.end = max(batch.end, position.end)
        position.inode, position.device = batch.identity.inode, batch.identity.device
        position.size, position.mtime = batch.identity.size, batch.identity.mtime
        self.state.set(str(transcript.path), position)
        self._archive(transcript, batch.identity, position)
        self.state.save()  # the position and the archive's entry together

    def _archive(self, transcript: TranscriptFile, identity: FileIdentity, position: TranscriptPosition) -> None:
        """Append what is new of ``transcript`` to its archive, when it is due
        (:func:`selfreflect.archive.due`); the entry is saved by the caller."""
        if not self._archivable(transcript, position, identity.mtime):
            return
        # complete lines of a session being written (a <private> span never spans two frames); all of a quiet one
        active = transcript.active(time.time())
        upto = position.end if active else max(position.end, identity.size)
        entry = self.state.archive.get(transcript.key)
        if not due(entry, upto, active, (identity.inode, identity.device)):
            return
        try:
            self.state.set_archive(transcript.key, self.archive.append(transcript, entry, upto))
        except OSError as exc:  # the index goes on; the next read tries again
            log.warning("%s: cannot archive it: %s", transcript.path, exc.strerror or exc)

    def _archivable(self, transcript: TranscriptFile, position: TranscriptPosition, mtime: float) -> bool:
        """Archiving is on, the file is on disk, and the index may keep it:
        what is forgotten, or of an excluded project, is not copied either (a
        transcript last changed before a forgotten date is all before it)."""
        if not self.settings.archive or transcript.archived:
            return False
        folder = transcript.key.split("/", 1)[0]
        project = self._project(project_path(position.first_cwd, folder))
        session = position.first_session or transcript.session_id
        whole = {"project": path_name(project), "project_path": project, "claude_project": folder}
        return self._kept(whole | {"session_id": session, "transcript": str(transcript.path), "timestamp": _iso(mtime)})

    @staticmethod
    def _unread(position: TranscriptPosition, entry: ArchiveEntry | None) -> bool:
        """An archived transcript (the file is gone) holds lines the index has
        not read: after a ``reindex``, or when it was deleted mid-read. When
        the archive holds less than was indexed (deleted while being written),
        nothing is read: what is indexed stays."""
        if entry is None:
            return not position.done
        read_all = position.done and position.final and position.size >= entry.archived
        return position.end < entry.archived and position.offset < entry.archived and not read_all

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
            vectors, windows = embed_with_windows(self.embedder, [text for _, text in part])
            self.embed_seconds += time.perf_counter() - started
            self.store.upsert(
                [
                    Record(r.id, v.tolist(), r.lexical, with_windows(r.payload, text, w))
                    for (r, text), v, w in zip(part, vectors, windows, strict=True)
                ]
            )
        return len(changed)

    def _unless_replaced(self, key: str, identity: FileIdentity, position: TranscriptPosition) -> TranscriptPosition:
        """``position``, unless the file at ``key`` was replaced (another
        inode) or truncated since it was read: then what was indexed of it
        is deleted and it is read again from the start."""
        if position.inode and (
            (identity.inode, identity.device) != (position.inode, position.device) or identity.size < position.end
        ):
            log.info("%s: replaced or truncated, indexing it again", key)
            self.store.delete_transcript(key)
            return TranscriptPosition()
        return position

    def _project(self, started: str) -> str:
        """The project of a session started in ``started``: the repository's
        main working tree when grouping repositories, else the folder."""
        return (repository_root(started) if self.settings.group_repositories else None) or started

    def _wanted(self, payload: dict[str, Any]) -> bool:
        """Kept (:meth:`_kept`), and not a compaction agent's whose session
        is at hand (:meth:`_compacted_in_session`)."""
        return self._kept(payload) and not self._compacted_in_session(payload)

    def _compacted_in_session(self, payload: dict[str, Any]) -> bool:
        """A compaction agent's record (``agent-acompact-*``) while its
        session's transcript is on disk or archived: the session holds the
        same turns, and its ``isCompactSummary`` line the same summary, so
        both are indexed once, from the session. Without the session (a
        transcript copied alone), the agent's own is all there is, and it is
        indexed."""
        if not str(payload["agent_id"] or "").startswith("acompact"):
            return False
        key = f"{payload['claude_project']}/{payload['session_id']}.jsonl"
        return key in self.state.archive or (self.settings.projects_dir / key).is_file()

    def _kept(self, payload: dict[str, Any]) -> bool:
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
            "parent_tool_use_id": exchange.parent_tool_use_id,
            "compact_summary": exchange.compact_summary,
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
        payload["title"] = self.state.titles.get(exchange.session_id, (0, ""))[1]  # not hashed: set_title keeps it
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
        position = self._unless_replaced(key, identity, position)
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
                    self.store.memory.after_batch()
                if progress:
                    progress(export.bytes_read, export.size)
            summary.chunks += self._write(records)
        self.state.remember_export(str(path))
        summary.seconds = time.monotonic() - started
        return summary


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


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
        self.titled: set[str] = set()  # sessions whose title changed
        self.untitled: list[tuple[int, str]] = []  # title lines read, for a session not known yet

    @property
    def size(self) -> int:
        return len(self.chunks)

    def title(self, state: State, session: str) -> None:
        """Give ``session`` the title lines read so far. A ``summary`` line
        has no session id: it names the file's session, known from the first
        record that has one (at a commit before any has, the file's name)."""
        if not session or not self.untitled:
            return
        for rank, title in self.untitled:
            if state.set_title(session, rank, title):
                self.titled.add(session)
        self.untitled.clear()

    def add(self, exchange: Exchange, chunks: list[Chunk]) -> None:
        self.chunks += [(exchange, c) for c in chunks]
        if exchange.start_offset < self.seen_end:
            last = chunks[-1].ordinal if chunks else exchange.ordinal_base - 1
            self.reread[exchange.key] = max(last, self.reread.get(exchange.key, -1))


def with_windows(payload: dict[str, Any], text: str, windows: Windows | None) -> dict[str, Any]:
    """``payload`` with the vectors of its text's snippet windows, where the
    embedder gave any and the text is longer than one snippet (added after
    ``text_hash``: the same text is the same chunk)."""
    if windows is None or not windows.starts or len(flatten(text)) <= WIDTH:
        return payload
    return {**payload, FIELD: pack(windows)}


def path_suffixes(path: str) -> list[str]:
    """Every trailing part of a path, so ``src/app.py`` finds ``/home/x/proj/src/app.py``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return ["/".join(parts[i:]) for i in range(len(parts))]
