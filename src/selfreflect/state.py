"""State: how far each transcript has been indexed.

Kept in SQLite (``<data dir>/state.sqlite3``, the standard library's): a row
per transcript, and only the rows a batch changed are written, in one
transaction, after the store confirmed that batch. The journal is a
write-ahead log synced on every commit, so a committed batch survives kill -9
and power loss, and a reader (``status``) never sees half a write. Reading
resumes at the start of the last exchange that was still open; its chunks
are rebuilt under the same ids, so a replay overwrites instead of
duplicating (at-least-once reading + idempotent writes).

Versioned (``PRAGMA user_version``): format 1 was ``state.json``, migrated
once and moved aside; format 3 added the archive's positions and session
titles (2 is read and upgraded in place); a newer format is refused. A file that is not a state
database, or rows of the wrong shape, are moved aside (or dropped) with a
warning and rebuilt by reading the transcripts again: idempotent writes make
that safe, only slower. Never silently.

The state also records which store it describes (the store's id): when the
store was deleted or replaced, the positions are dropped and everything is
read again into the new store. And what the user asked to forget
(``selfreflect forget``): tombstones that keep it out of the index when the
transcripts are read again. And the Claude.ai exports that were imported,
which ``reindex`` imports again.

Two more records outlive a new store, as they describe the transcripts,
not the index: how much of each transcript the archive holds
(:class:`ArchiveEntry`, saved in the same transaction as the read positions,
so a kill -9 leaves the two in step), and each session's title.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from selfreflect.errors import DiskFull, SelfReflectError

log = logging.getLogger("selfreflect")

FORMAT = 3  # 1: state.json; 2: SQLite; 3: + archive, titles
LEGACY_FILE = "state.json"
BUSY_SECONDS = 30.0  # how long a reader or writer waits for another process's lock
# SQLite's result codes that say a file is not a state database: moved aside and rebuilt. The others
# (busy, locked, I/O, cannot open, read-only) say it cannot be read now: an error, and nothing is moved.
_NOT_A_STATE = {1, 11, 24, 26}  # SQLITE_ERROR (another schema), SQLITE_CORRUPT, SQLITE_FORMAT, SQLITE_NOTADB


@dataclass(slots=True)
class TranscriptPosition:
    """Where to resume one transcript.

    Attributes:
        offset: byte offset of the first line not yet final in the store (the
            start of the open exchange); reading resumes here.
        line: the line number at ``offset``.
        end: bytes of complete lines read so far (``end >= offset``).
        inode, device, size, mtime: the file as last seen, to tell growth
            from replacement or truncation.
        bad_lines: lines that were not JSON objects (NUL, torn, not objects).
        oversized_lines: lines skipped for being longer than the limit.
        final: the last read took the file as finished (it had stopped
            growing), so an unterminated last line was used if it was whole.
        context: where the open exchange stands when ``offset`` is inside it
            (its final chunks are written): :meth:`Assembler.snapshot`.
        done: the last read went to the end of the file and wrote the open
            exchange too; a read that stopped early (the daemon's turns) has
            read lines whose exchange is not written yet.
        first_cwd: the first ``cwd`` of the transcript: where the session was
            started, so its project (:mod:`selfreflect.projects`).
        first_session: the first ``sessionId`` of the transcript: the session
            a title line without one (``summary``) names.
        held_back: the file ends in a line without its newline that is not
            indexed: ``"writing"`` (the file is still being written; the
            line is read once it ends), ``"torn"`` (the file stopped growing
            and the line is not a whole record), or ``""``.
    """

    offset: int = 0
    line: int = 1
    end: int = 0
    inode: int = 0
    device: int = 0
    size: int = 0
    mtime: float = 0.0
    bad_lines: int = 0
    oversized_lines: int = 0
    final: bool = False
    context: dict[str, Any] | None = None
    done: bool = False
    first_cwd: str = ""
    first_session: str = ""
    held_back: str = ""


@dataclass(slots=True)
class ArchiveEntry:
    """How much of one transcript its archive holds (:mod:`selfreflect.archive`).

    Attributes:
        archived: bytes of the transcript, from its start, in the archive.
        size: bytes of the archive file that hold them: anything after is a
            frame written after this entry was saved (a kill -9 in between),
            cut off before the next append.
        inode, device: the transcript archived (another file there is archived anew).
        mtime: the transcript's modification time when last archived.
    """

    archived: int = 0
    size: int = 0
    inode: int = 0
    device: int = 0
    mtime: float = 0.0


class State:
    """The positions of all transcripts, keyed by absolute path.

    Attributes:
        positions: every transcript's position (read them; change them with
            :meth:`set` and :meth:`forget`, which :meth:`save` writes).
        store_id: the id of the store these positions describe.
        tombstones: what was forgotten, as (kind, value): ``project``,
            ``session``, ``transcript`` or ``before`` (an ISO instant).
        exports: the Claude.ai exports imported (absolute paths), in order.
        archive: what the archive holds of each transcript, keyed by its
            path under the projects folder (change with :meth:`set_archive`).
        titles: each session's title and its rank (higher wins: see
            :meth:`set_title`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.positions: dict[str, TranscriptPosition] = {}
        self.store_id = ""
        self.tombstones: tuple[tuple[str, str], ...] = ()
        self.exports: tuple[str, ...] = ()
        self.archive: dict[str, ArchiveEntry] = {}
        self.titles: dict[str, tuple[int, str]] = {}
        self._dirty: set[str] = set()
        self._archive_dirty: set[str] = set()
        self._titles_dirty: set[str] = set()
        self._meta_dirty = False

    @classmethod
    def load(cls, path: Path) -> State:
        """Read the state (an empty one when there is none yet).

        Raises:
            SelfReflectError: the state was written by a newer selfreflect,
                or cannot be read at all (permissions, I/O).
        """
        state = cls(path)
        if not path.exists():
            state._migrate_legacy()
            return state
        try:
            with closing(_connect(path)) as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > FORMAT:
                    raise SelfReflectError(
                        f"{path} was written by a newer selfreflect (format {version}, this version reads "
                        f"up to {FORMAT}): upgrade selfreflect, or use another --data-dir"
                    )
                if version < FORMAT:
                    _create(db)
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                state.tombstones = tuple(db.execute("SELECT kind, value FROM forgotten ORDER BY kind, value"))
                # row by row, never all at once: a heavy user's tens of thousands of transcripts
                for key, blob in db.execute("SELECT path, position FROM positions"):
                    position = _position(blob)
                    if position is None:
                        log.warning("%s: the saved position of %s is damaged; that transcript is read again", path, key)
                        state._dirty.add(key)  # dropped from the file at the next save
                        continue
                    state.positions[key] = position
                for key, blob in db.execute("SELECT key, entry FROM archive"):
                    entry = _archive_entry(blob)
                    if entry is None:
                        log.warning(
                            "%s: the archive record of %s is damaged; that transcript is archived anew", path, key
                        )
                        state._archive_dirty.add(key)
                        continue
                    state.archive[key] = entry
                for session, rank, title in db.execute("SELECT session_id, rank, title FROM titles"):
                    state.titles[str(session)] = (int(rank), str(title))
        except sqlite3.Error as exc:
            if not _not_a_state(exc):  # busy, locked, I/O, cannot open: the state is left as it is
                raise SelfReflectError(f"cannot read the state at {path}: {exc}") from exc
            state = cls(path)  # nothing of what was read before the damage
            state._move_aside(path, f"it is not a state database ({exc})")
            return state
        state.store_id = str(meta.get("store_id", ""))
        try:
            exports = orjson.loads(meta.get("exports", "[]"))
        except orjson.JSONDecodeError:
            exports = []
        state.exports = tuple(str(e) for e in exports if isinstance(e, str)) if isinstance(exports, list) else ()
        return state

    def get(self, path: str) -> TranscriptPosition:
        return self.positions.get(path) or TranscriptPosition()

    def set(self, path: str, position: TranscriptPosition) -> None:
        self.positions[path] = position
        self._dirty.add(path)

    def forget(self, path: str) -> None:
        self.positions.pop(path, None)
        self._dirty.add(path)

    def set_archive(self, key: str, entry: ArchiveEntry) -> None:
        self.archive[key] = entry
        self._archive_dirty.add(key)

    def drop_archive(self, key: str) -> None:
        if self.archive.pop(key, None) is not None:
            self._archive_dirty.add(key)

    def set_title(self, session_id: str, rank: int, title: str) -> bool:
        """Take a title line of ``session_id``: it wins over titles of a lower
        rank, and over an earlier one of the same rank. Returns whether the
        session's title changed."""
        known = self.titles.get(session_id)
        if known is not None and (known[0] > rank or known == (rank, title)):
            return False
        changed = known is None or known[1] != title
        self.titles[session_id] = (rank, title)
        self._titles_dirty.add(session_id)
        return changed

    def bury(self, kind: str, value: str) -> None:
        """Remember, at once and for good, that what ``kind`` = ``value`` names
        was forgotten (see :meth:`forgotten`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(self.path)) as db, db:
            if db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
                _create(db)
            db.execute("INSERT OR IGNORE INTO forgotten (kind, value) VALUES (?, ?)", (kind, value))
        self.tombstones = tuple(sorted({*self.tombstones, (kind, value)}))

    def remember_export(self, path: str) -> None:
        """Record, at once, that the export at ``path`` was imported."""
        exports = tuple(dict.fromkeys((*self.exports, path)))
        if exports == self.exports:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(self.path)) as db, db:
            if db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
                _create(db)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('exports', ?)",
                (orjson.dumps(list(exports)).decode(),),
            )
        self.exports = exports

    def forgotten(self, payload: dict[str, Any]) -> bool:
        """A chunk (its payload) that a tombstone keeps out of the index."""
        for kind, value in self.tombstones:
            if kind == "before" and (payload.get("timestamp") or "9999") < value:
                return True
            if kind == "session" and payload.get("session_id") == value:
                return True
            if kind == "transcript" and payload.get("transcript") == value:
                return True
            if kind == "project" and value.lower() in (
                str(payload.get("project", "")).lower(),
                str(payload.get("project_path", "")).lower(),
            ):
                return True
        return False

    def bind(self, store_id: str) -> bool:
        """Tie the state to the store ``store_id``. Positions saved for
        another store (deleted, replaced) are dropped: everything is read
        again into this one. Returns whether they were dropped."""
        if store_id == self.store_id:
            return False
        dropped = bool(self.store_id) and bool(self.positions)
        if dropped:
            log.warning(
                "the store was replaced since the transcripts were read (store %s, state for %s): "
                "reading all %d transcripts again",
                store_id,
                self.store_id,
                len(self.positions),
            )
            self._dirty |= set(self.positions)
            self.positions.clear()
        self.store_id = store_id
        self._meta_dirty = True
        return dropped

    def moved_to(self, store_id: str) -> None:
        """The store these positions describe was copied whole into
        ``store_id`` (``migrate``): the positions hold there too."""
        self.store_id = store_id
        self._meta_dirty = True

    def save(self) -> None:
        """Write what changed since the last save, in one transaction."""
        dirty = self._dirty or self._archive_dirty or self._titles_dirty or self._meta_dirty
        if not dirty and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write()
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise DiskFull(f"the disk holding {self.path} is full: free some space (nothing was lost)") from exc
            raise SelfReflectError(f"cannot save the read positions in {self.path}: {exc}") from exc
        self._dirty.clear()
        self._archive_dirty.clear()
        self._titles_dirty.clear()
        self._meta_dirty = False

    def _write(self) -> None:
        with closing(_connect(self.path)) as db:
            with db:
                if db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
                    _create(db)
                for key in self._dirty:
                    position = self.positions.get(key)
                    if position is None:
                        db.execute("DELETE FROM positions WHERE path = ?", (key,))
                    else:
                        blob = orjson.dumps(asdict(position)).decode()
                        db.execute("INSERT OR REPLACE INTO positions (path, position) VALUES (?, ?)", (key, blob))
                for key in self._archive_dirty:
                    entry = self.archive.get(key)
                    if entry is None:
                        db.execute("DELETE FROM archive WHERE key = ?", (key,))
                    else:
                        blob = orjson.dumps(asdict(entry)).decode()
                        db.execute("INSERT OR REPLACE INTO archive (key, entry) VALUES (?, ?)", (key, blob))
                for session in self._titles_dirty:
                    rank, title = self.titles[session]
                    db.execute(
                        "INSERT OR REPLACE INTO titles (session_id, rank, title) VALUES (?, ?, ?)",
                        (session, rank, title),
                    )
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('store_id', ?)", (self.store_id,))

    def _move_aside(self, path: Path, why: str) -> None:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning(
            "the state %s cannot be used: %s; moved it to %s and reading every transcript again", path, why, aside
        )
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                source.replace(Path(f"{aside}{suffix}"))

    def _migrate_legacy(self) -> None:
        """Format 1 (``state.json``): take its positions, move it aside."""
        legacy = self.path.with_name(LEGACY_FILE)
        if not legacy.exists():
            return
        try:
            raw = orjson.loads(legacy.read_bytes())
            entries = raw["positions"] if isinstance(raw, dict) else None
            if not isinstance(entries, dict):
                raise ValueError(f"expected {{'positions': {{...}}}}, found {type(entries or raw).__name__}")
        except (OSError, ValueError, KeyError) as exc:
            self._move_aside(legacy, f"{exc}")
            return
        for key, value in entries.items():
            position = _position(orjson.dumps(value))
            if position is not None:
                self.set(key, position)
        self.save()
        legacy.replace(legacy.with_name(f"{LEGACY_FILE}.migrated"))
        log.info("moved the read positions of %d transcripts from %s to %s", len(self.positions), legacy, self.path)


def _not_a_state(error: sqlite3.Error) -> bool:
    """``error`` says the file is not a state database (damaged, another
    file, another schema), not that it cannot be read now."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.DatabaseError) and (code is None or code & 0xFF in _NOT_A_STATE)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=BUSY_SECONDS)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _create(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS positions (path TEXT PRIMARY KEY, position TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS forgotten (kind TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, value))"
    )
    db.execute("CREATE TABLE IF NOT EXISTS archive (key TEXT PRIMARY KEY, entry TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS titles (session_id TEXT PRIMARY KEY, rank INTEGER NOT NULL, title TEXT NOT NULL)"
    )
    db.execute(f"PRAGMA user_version = {FORMAT}")


def _archive_entry(blob: str | bytes) -> ArchiveEntry | None:
    """A saved archive entry, or ``None`` when it is not one we can trust."""
    try:
        value: Any = orjson.loads(blob)
        known = {f.name for f in fields(ArchiveEntry)}
        entry = ArchiveEntry(**{k: v for k, v in value.items() if k in known})
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    numbers = (entry.archived, entry.size, entry.inode, entry.device)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return None
    return entry if isinstance(entry.mtime, (int, float)) else None


_NUMBERS = ("offset", "line", "end", "inode", "device", "size", "bad_lines", "oversized_lines")


def _position(blob: str | bytes) -> TranscriptPosition | None:
    """A saved position, or ``None`` when it is not one we can trust."""
    try:
        value: Any = orjson.loads(blob)
        known = {f.name for f in fields(TranscriptPosition)}
        position = TranscriptPosition(**{k: v for k, v in value.items() if k in known})
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    numbers = [getattr(position, name) for name in _NUMBERS]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return None
    if position.end < position.offset or position.line < 1 or not isinstance(position.mtime, (int, float)):
        return None
    if position.context is not None and not isinstance(position.context, dict):
        return None
    if not isinstance(position.held_back, str):
        position.held_back = ""  # a note for the user, not where to resume: no reason to read the file again
    return position
