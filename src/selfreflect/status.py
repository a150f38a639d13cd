"""Status: what is indexed, per project, and how the importer is doing; what
the archive holds, and what Claude Code's clean-up will delete soon."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from selfreflect.settings import Settings

if TYPE_CHECKING:
    from selfreflect.discover import TranscriptFile
    from selfreflect.state import State
    from selfreflect.store import Store

# The report's imports are made where the report is made: the CLI imports
# this module for status_text alone, to print what the daemon answered.

MAX_PROJECTS = 10_000
MAX_SESSIONS = 100_000
CLEANUP_WINDOW_DAYS = 7  # how far ahead the clean-up is looked at
MAX_DUE_LISTED = 50
# The per-project table and the bytes on disk read every segment (140-400 ms
# at 250k chunks): while the importer writes, they are recomputed at most
# this often (seconds), in the background when asked for within a minute
# (``remembered``): the answer is the last one, and the next is the new one.
# The chunk count is always current (the segments' tally: well under 1 ms).
LAG = 10.0


def status_report(
    settings: Settings,
    store: Store | None,
    state: State | None = None,
    transcripts: list[TranscriptFile] | None = None,
) -> dict[str, Any]:
    """The status as JSON-ready data (``store`` is ``None`` before the first
    import). A daemon gives what its importer holds: ``state``, as it writes
    it, and ``transcripts``, as its last scan found them and the file events
    since. Else the state is read from disk (45 ms for 3,000 transcripts) and
    the transcripts walked now (40 ms)."""
    from selfreflect.archive import Archive
    from selfreflect.embed import make_embedder
    from selfreflect.errors import ClaudeDirMissing
    from selfreflect.state import State
    from selfreflect.store import SearchFilter, remembered

    state = state or State.load(settings.state_file)
    if transcripts is None:
        try:
            transcripts = Archive.of(settings).transcripts()
        except ClaudeDirMissing:
            transcripts = []
    known = dict(state.positions)  # at once: the importer adds to them meanwhile
    positions = known.values()
    if store is None:  # what the first import will use
        chosen = make_embedder(settings)
        model, dim = chosen.name, chosen.dim
    else:
        model, dim = store.model, store.dim
    report: dict[str, Any] = {
        "data_dir": str(settings.data_dir),
        "claude_dir": str(settings.claude_dir),
        "model": model,
        "dim": dim,
        "store": (
            f"Qdrant {settings.qdrant_url}, collection {settings.qdrant_collection}, this machine {settings.machine}"
            if settings.qdrant_url
            else "embedded"
        ),
        "store_bytes": remembered(store, "store_bytes", store.size_bytes, LAG) if store else 0,
        "chunks": remembered(store, "chunks", lambda: store.count(SearchFilter())) if store else 0,
        "compact": store.needs_compaction() if store else False,
        "transcripts": len(known) - (str(settings.history_file) in known),
        "bad_lines": sum(p.bad_lines for p in positions),
        "oversized_lines": sum(p.oversized_lines for p in positions),
        "archive": archive_report(settings, state, transcripts),
        "cleanup": cleanup_report(settings, state, transcripts, time.time()),
        "projects": [],
    }
    if store is None:
        return report
    report["projects"] = [dict(p) for p in remembered(store, "projects", lambda: project_table(store), LAG)]
    return report


def project_table(store: Store) -> list[dict[str, Any]]:
    """Each project's sessions, chunks and last activity, the most recently
    active first (two queries a project: 1-3 ms each on a big store)."""
    from selfreflect.projects import display_names
    from selfreflect.store import SearchFilter

    facets = store.facet("project_path", SearchFilter(), MAX_PROJECTS)
    names = display_names(str(p) for p, _ in facets)
    table = []
    for project, chunks in facets:
        where = SearchFilter(projects=(str(project),))
        latest = store.latest(where) or {}
        table.append(
            {
                "project": names.get(str(project)) or latest.get("project") or str(project),
                "path": str(project),
                "sessions": len(store.facet("session_id", where, MAX_SESSIONS, exact=False)),  # only how many
                "chunks": chunks,
                "last_activity": latest.get("timestamp"),
                "last_session": latest.get("session_id"),
                "last_title": latest.get("title") or "",
            }
        )
    table.sort(key=lambda p: p["last_activity"] or "", reverse=True)
    return table


def archive_report(settings: Settings, state: State, transcripts: list[TranscriptFile]) -> dict[str, Any]:
    """What the archive holds: its bytes on disk, the transcript bytes they
    hold, and how many transcripts only the archive still has; of
    ``transcripts`` (on disk, then those only the archive holds), as the
    state records their archives (not a ``stat`` of each: 3,000 took 18 ms)."""
    files = packed = held = gone = 0
    for transcript in transcripts:
        entry = state.archive.get(transcript.key)
        if transcript.archived:  # only the archive holds it: its size is the archive's
            packed += transcript.size
            gone += 1
        elif entry is not None and entry.size:
            packed += entry.size
        else:
            continue  # not archived (yet)
        files += 1
        held += entry.archived if entry else 0
    return {
        "enabled": settings.archive,
        "dir": str(settings.archive_dir),
        "transcripts": files,
        "bytes": packed,
        "transcript_bytes": held,
        "only_in_archive": gone,
    }


def cleanup_report(settings: Settings, state: State, transcripts: list[TranscriptFile], now: float) -> dict[str, Any]:
    """Of ``transcripts``, those Claude Code deletes within the next
    ``CLEANUP_WINDOW_DAYS`` (at its next start after they pass
    ``cleanupPeriodDays`` since their last change), and whether each is
    archived in full."""
    from selfreflect.discover import cleanup_period

    days, source = cleanup_period(settings.claude_dir)
    cutoff = now - max(days - CLEANUP_WINDOW_DAYS, 0) * 86400
    due = sorted((f for f in transcripts if not f.archived and f.mtime < cutoff), key=lambda f: f.mtime)
    listed: list[dict[str, Any]] = []
    archived = 0
    for transcript in due:
        entry = state.archive.get(transcript.key)
        whole = entry is not None and entry.archived >= transcript.size and entry.mtime >= transcript.mtime
        archived += whole
        if len(listed) < MAX_DUE_LISTED:
            deleted = datetime.fromtimestamp(transcript.mtime + days * 86400, timezone.utc)
            listed.append(
                {
                    "transcript": str(transcript.path),
                    "session_id": transcript.session_id,
                    "title": state.titles.get(transcript.session_id, (0, ""))[1],
                    "deleted_after": deleted.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "archived": whole,
                }
            )
    return {
        "period_days": days,
        "period_from": source,
        "within_days": CLEANUP_WINDOW_DAYS,
        "due": len(due),
        "archived": archived,
        "not_archived": len(due) - archived,
        "transcripts": listed,
    }


def status_text(report: dict[str, Any], max_projects: int | None = None) -> str:
    """The status as ``selfreflect status`` prints it (``max_projects``: the
    most recently active ones only, and how many more there are)."""
    lines = [
        f"data dir:    {report['data_dir']}",
        f"claude dir:  {report['claude_dir']}",
        f"model:       {report['model']} ({report['dim']} dimensions)",
        (
            f"store:       {report['store_bytes'] / 1e6:.1f} MB, {report['chunks']} chunks"
            if report["store"] == "embedded"
            else f"store:       {report['store']}: {report['chunks']} chunks"
        )
        + (" in many small segments: `selfreflect compact` makes searches faster" if report.get("compact") else ""),
        f"transcripts: {report['transcripts']} read, {report['bad_lines']} bad lines, "
        f"{report['oversized_lines']} oversized lines skipped",
        _archive_line(report["archive"]),
        _cleanup_line(report["cleanup"], report["archive"]["enabled"]),
    ]
    daemon = report.get("daemon")
    if daemon:
        up = int(daemon["uptime_seconds"])
        lines.append(
            f"daemon:      pid {daemon['pid']}, port {daemon['port']}, "
            f"up {up // 3600}h{up % 3600 // 60:02d}m, {daemon['files_pending']} files pending, "
            f"lag {daemon['lag_seconds']:.1f} s, started by {daemon['started_by']}, {daemon['status']}"
        )
        lines += [f"             problem: {problem}" for problem in daemon.get("problems", [])]
        compaction = daemon.get("compaction") or {}
        if compaction.get("running"):
            lines.append(
                f"             compacting the store{' on its own' if compaction.get('automatic') else ''} "
                f"({compaction['phase']}: {compaction['segments']} segments, "
                f"{compaction['segments_before']} before): searches and reading go on"
            )
    else:
        lines.append("daemon:      not running (`selfreflect serve` keeps the index current)")
    projects = report["projects"]
    if not projects:
        return "\n".join([*lines, "", "Nothing indexed yet: run `selfreflect import`."])
    lines += ["", f"{'project':<32} {'sessions':>8} {'chunks':>8}  {'last activity':<19}  last session"]
    for p in projects[:max_projects]:
        lines.append(
            f"{p['project'][:32]:<32} {p['sessions']:>8} {p['chunks']:>8}  {(p['last_activity'] or '')[:19]:<19}  "
            f"{(p.get('last_title') or '')[:40]}".rstrip()
        )
    if max_projects is not None and len(projects) > max_projects:
        lines.append(f"... and {len(projects) - max_projects} more projects")
    return "\n".join(lines)


def _archive_line(archive: dict[str, Any]) -> str:
    held = f"{archive['bytes'] / 1e6:.1f} MB, {archive['transcripts']} transcripts"
    if archive["transcript_bytes"] and archive["bytes"]:
        ratio = archive["transcript_bytes"] / archive["bytes"]
        held += f" ({archive['transcript_bytes'] / 1e6:.1f} MB of transcripts, {ratio:.1f}x smaller)"
    gone = f", {archive['only_in_archive']} only there (deleted by Claude Code)" if archive["only_in_archive"] else ""
    if not archive["enabled"]:
        return f"archive:     off (SELFREFLECT_ARCHIVE){f'; {held}{gone} kept' if archive['transcripts'] else ''}"
    return f"archive:     {held}{gone}"


def _cleanup_line(cleanup: dict[str, Any], archiving: bool) -> str:
    read = cleanup["period_from"]
    source = read if read.startswith("the default") else f"cleanupPeriodDays in {read}"
    said = f"clean-up:    Claude Code deletes after {cleanup['period_days']} days ({source}): "
    due, within = cleanup["due"], cleanup["within_days"]
    if not due:
        return f"{said}none within {within} days"
    if cleanup["not_archived"] == 0:
        kept = "all archived"
    elif cleanup["archived"] == 0:
        kept = "none archived" + ("" if archiving else " (the archive is off)")
    else:
        kept = f"{cleanup['archived']} archived, {cleanup['not_archived']} not yet"
    return f"{said}{due} transcript{'' if due == 1 else 's'} within {within} days, {kept}"
