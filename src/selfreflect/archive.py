"""Archive: a compressed copy of every transcript read, kept after Claude Code
deletes it.

Claude Code deletes transcripts older than ``cleanupPeriodDays`` (30 by
default, ``reference/claude-code-transcripts.md`` §2). The index outlives
them, and so does this copy: excerpts (``show``, ``read_conversation``) and a
``reindex`` read it once the transcript is gone, with the transcript's own
path and line numbers.

Layout: ``<data dir>/archive/<claude project folder>/<file>.jsonl.zst``, the
transcript's path under ``projects/`` (a 2.1.x sub-agent under
``<session>/subagents/`` as on disk), beside it a copy of a sub-agent's
``agent-<id>.meta.json``. An archive is a run of zstd frames, one per
append of the transcript's next bytes; zstd readers (``zstd -d``, this
module) decompress concatenated frames as one stream. Nothing is compressed
twice, and memory stays bounded: 64 KB blocks stream through one compressor.

Crash safety: the state records how many bytes of the transcript the
archive holds and how long the archive file is then (:class:`ArchiveEntry`),
with the read positions, in one transaction. A frame is written and synced
before that record is saved. A frame written after the last saved record (a
kill -9 in between, or a torn write) is cut off before the next append and
its bytes are written again: nothing lost, nothing twice.

When: a transcript nobody writes (quiet for 5 minutes) is archived whole as
soon as it is read; one being written each time 1 MB more of it is on disk,
and in full once it is quiet. Small frames compress badly: a frame per line
gives 2.4x, per 1 MB 6.5x, per file 6.6x (zstd level 3, tests/corpus/real).

The archive mirrors the transcript: when the file is replaced or cut
shorter (the index then reads it anew), its archive starts over.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

from selfreflect.discover import Report, TranscriptFile, discover, named
from selfreflect.errors import ClaudeDirMissing
from selfreflect.settings import Settings
from selfreflect.state import ArchiveEntry, State
from selfreflect.system import sync_folder
from selfreflect.tail import BLOCK, Line, lines_of, open_regular, read_lines

log = logging.getLogger("selfreflect")

SUFFIX = ".zst"
LEVEL = 3  # zstd's default; 9 and 19 make archives 7 % and 9 % smaller for 5x and 60x the time
FRAME_BYTES = 1 << 20  # a transcript being written is archived in steps this big


def due(entry: ArchiveEntry | None, size: int, active: bool, file_id: tuple[int, int] | None = None) -> bool:
    """The transcript (``size`` bytes, ``active``: being written, ``file_id``:
    its inode and device when known) has bytes the archive should take now."""
    if entry is None or size < entry.archived or (file_id is not None and file_id != (entry.inode, entry.device)):
        behind = size  # not archived yet, or another file than was archived
    else:
        behind = size - entry.archived
    return behind > 0 and (not active or behind >= FRAME_BYTES)


class Archive:
    """The archive folder.

    Args:
        root: ``<data dir>/archive``.
        projects_dir: Claude Code's ``projects/`` folder, whose layout it mirrors.
    """

    def __init__(self, root: Path, projects_dir: Path) -> None:
        self.root = root
        self.projects_dir = projects_dir

    @classmethod
    def of(cls, settings: Settings) -> Archive:
        """The archive in the settings' data dir, of their Claude folder."""
        return cls(settings.archive_dir, settings.projects_dir)

    def path(self, key: str) -> Path:
        """Where the transcript at ``key`` (its path under ``projects/``) is archived."""
        return self.root / (key + SUFFIX)

    def meta_path(self, key: str) -> Path:
        """The archived copy of a sub-agent's ``.meta.json``."""
        return self.root / (key[: -len(".jsonl")] + ".meta.json")

    def key_of(self, transcript: Path) -> str | None:
        """The key of the transcript at ``transcript``, if it is under ``projects/``."""
        try:
            return transcript.relative_to(self.projects_dir).as_posix()
        except ValueError:
            return None

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def append(self, transcript: TranscriptFile, entry: ArchiveEntry | None, upto: int) -> ArchiveEntry:
        """Copy the transcript's bytes from ``entry.archived`` to ``upto``
        into one new frame, synced, and return the entry to save for it.

        Starts over when the file is another one than was archived, or is
        shorter (replaced, cut), or the archive file is shorter than the entry
        says (damaged). A sub-agent's ``.meta.json`` is copied along.

        Raises:
            OSError: the transcript or the archive cannot be read or written
                (nothing is recorded: the next append tries again).
        """
        target = self.path(transcript.key)
        with open_regular(transcript.path) as source:
            st = os.fstat(source.fileno())
            start, keep = (entry.archived, entry.size) if entry else (0, 0)
            if entry and ((entry.inode, entry.device) != (st.st_ino, st.st_dev) or st.st_size < entry.archived):
                log.info("%s: replaced or cut shorter since it was archived: archiving it anew", transcript.path)
                start = keep = 0
            if start >= upto and entry is not None and (start, keep) == (entry.archived, entry.size):
                return entry  # nothing new
            created = not target.exists()
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "r+b" if not created else "w+b") as out:
                if os.fstat(out.fileno()).st_size < keep:
                    log.warning("%s is shorter than recorded: archiving %s anew", target, transcript.path)
                    start = keep = 0
                out.truncate(keep)  # a frame written after the entry was saved: its bytes come again now
                out.seek(keep)
                source.seek(start)
                copied, private = 0, PrivateMask()
                with zstandard.ZstdCompressor(level=LEVEL).stream_writer(out, closefd=False) as frame:
                    while copied < upto - start and (block := source.read(min(BLOCK, upto - start - copied))):
                        frame.write(private.mask(block))
                        copied += len(block)
                    frame.write(private.mask(b"", last=True))
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            if created:
                sync_folder(target.parent)
        if transcript.agent_id:
            self._keep_meta(transcript)
        return ArchiveEntry(start + copied, size, st.st_ino, st.st_dev, st.st_mtime)

    def _keep_meta(self, transcript: TranscriptFile) -> None:
        """Copy a sub-agent's ``.meta.json`` (small; rewritten when the agent resumes)."""
        source = meta_file(transcript.path)
        if not source.is_file():
            return
        target = self.meta_path(transcript.key)
        try:
            if target.is_file() and target.read_bytes() == source.read_bytes():
                return
            shutil.copyfile(source, target)
        except OSError as exc:
            log.warning("%s: cannot archive it: %s", source, exc.strerror or exc)

    def drop(self, transcripts: list[str], state: State) -> int:
        """Delete the archived copies of ``transcripts`` (paths) and their
        entries (saved); returns how many there were."""
        dropped = 0
        for path in transcripts:
            key = self.key_of(Path(path))
            if key is None:
                continue
            for copy in (self.path(key), self.meta_path(key)):
                if copy.is_file():
                    copy.unlink()
                    dropped += copy.suffix == SUFFIX
            state.drop_archive(key)
        state.save()
        return dropped

    def read_lines(
        self, key: str, offset: int = 0, first_line: int = 1, max_line_bytes: int = 8 << 20
    ) -> Iterator[Line]:
        """The lines of an archived transcript from byte ``offset`` (the start
        of line ``first_line``), decompressed as they are read. A torn last
        frame ends the data early; a last line without its newline is given.

        Raises:
            OSError: there is no such archive, or it cannot be read.
        """
        with open(self.path(key), "rb") as raw:
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
            with stream:
                try:
                    stream.seek(offset)  # decompressed and dropped: archives are read from the start
                except zstandard.ZstdError as exc:
                    log.warning("%s is damaged before byte %d (%s): nothing more to read", raw.name, offset, exc)
                    return
                yield from lines_of(_Tolerant(stream), offset, first_line, max_line_bytes, final=True)

    def keys(self) -> Iterator[str]:
        """The key of every archived transcript."""
        if not self.root.is_dir():
            return
        top = os.path.join(self.root, "")
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            under = os.path.join(folder, "")[len(top) :].replace(os.sep, "/")  # strings: pathlib was most of the time
            for name in sorted(files):
                if name.endswith(".jsonl" + SUFFIX):
                    yield under + name[: -len(SUFFIX)]

    def transcripts(self, report: Report | None = None) -> list[TranscriptFile]:
        """Every transcript on disk (see :func:`discover`), then those only the archive still holds.

        Raises:
            ClaudeDirMissing: there is no projects folder, and nothing in the archive.
        """
        gone = list(self.gone())
        try:
            return discover(self.projects_dir, report=report) + gone
        except ClaudeDirMissing:
            if not gone:
                raise
            return gone

    def gone(self) -> Iterator[TranscriptFile]:
        """The archived transcripts whose file is no longer in ``projects/``."""
        for key in self.keys():
            found = self.archived(key)
            if found is not None:
                yield found

    def archived(self, key: str) -> TranscriptFile | None:
        """The transcript at ``key`` if only the archive holds it (its file is gone)."""
        if os.path.exists(os.path.join(self.projects_dir, key)):
            return None
        try:
            st = os.stat(os.path.join(self.root, key + SUFFIX))
        except OSError:
            return None
        return named(self.projects_dir, key, st.st_mtime, st.st_size, archived=True)


def meta_file(transcript: Path) -> Path:
    """``agent-<id>.jsonl`` -> ``agent-<id>.meta.json`` beside it (2.1.x)."""
    return transcript.with_name(transcript.name[: -len(".jsonl")] + ".meta.json")


def transcript_lines(path: Path, archive: Archive | None, max_line_bytes: int = 8 << 20) -> Iterator[Line]:
    """Every line of the transcript at ``path``, a last one without its
    newline too; from its archive when the file is gone.

    Raises:
        OSError: the file is gone and not archived (FileNotFoundError), or
            cannot be read.
    """
    key = archive.key_of(path) if archive is not None else None
    if archive is not None and key is not None and not path.exists() and archive.has(key):
        yield from archive.read_lines(key, max_line_bytes=max_line_bytes)
    else:
        yield from read_lines(path, max_line_bytes=max_line_bytes, final=True)


class PrivateMask:
    """What a user marked ``<private>...</private>`` stays out of the archive,
    as it stays out of the index (:mod:`selfreflect.redact`): each byte of it
    becomes ``*``, so offsets and line numbers stay those of the transcript.
    Raw JSON holds the marked text inside one string: the span ends at
    ``</private>``, else (an unclosed marker hides the rest of the text) at
    the string's closing quote or the end of the line. Fed block by block;
    the last few bytes of a block are held back, as they may begin a marker.
    """

    OPEN, CLOSE = b"<private>", b"</private>"

    def __init__(self) -> None:
        self.inside = False
        self.escaped = False  # after a backslash inside the span
        self.held = b""

    def mask(self, block: bytes, last: bool = False) -> bytes:
        data = self.held + block
        end = len(data) if last else max(0, len(data) - (len(self.CLOSE) - 1))
        folded = data.lower()
        out = bytearray()
        i = 0
        while i < end:
            if not self.inside:
                found = folded.find(self.OPEN, i, end + len(self.OPEN) - 1)
                if found < 0:
                    out += data[i:end]
                    i = end
                    break
                out += data[i : found + len(self.OPEN)]
                i, self.inside, self.escaped = found + len(self.OPEN), True, False
                continue
            byte = data[i]
            if self.escaped or byte == 0x5C:  # a backslash and what it escapes
                self.escaped = not self.escaped
                out.append(0x2A)
            elif byte in (0x22, 0x0A):  # the string's closing quote, or the end of the line
                self.inside = False
                out.append(byte)
            elif folded.startswith(self.CLOSE, i):
                out += data[i : i + len(self.CLOSE)]
                i += len(self.CLOSE)
                self.inside = False
                continue
            else:
                out.append(0x2A)
            i += 1
        self.held = data[i:]
        return bytes(out)


class _Tolerant:
    """A decompressing stream that ends, instead of failing, at a damaged frame."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def read(self, size: int) -> bytes:
        try:
            return self.stream.read(size)
        except zstandard.ZstdError as exc:
            log.warning("an archive ends in a damaged frame (%s): read up to it", exc)
            return b""


def agent_meta(transcript: TranscriptFile, archive: Archive | None) -> dict[str, Any]:
    """A 2.1.x sub-agent's ``.meta.json`` (``toolUseId``: the tool call that
    started it, ``parentAgentId``, ``agentType``, ``description``), from
    beside the transcript or, once that is gone, from the archive; ``{}``
    when there is none or it is not a JSON object."""
    if not transcript.agent_id:
        return {}
    for path in (meta_file(transcript.path), archive.meta_path(transcript.key) if archive else None):
        if path is None:
            continue
        try:
            meta = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        return meta if isinstance(meta, dict) else {}
    return {}
