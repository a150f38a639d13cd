"""Status: what is indexed, per project, and how the importer is doing."""

from __future__ import annotations

from typing import Any

from selfreflect.embed import make_embedder
from selfreflect.projects import display_names
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store import SearchFilter, Store

MAX_PROJECTS = 10_000
MAX_SESSIONS = 100_000


def status_report(settings: Settings, store: Store | None) -> dict[str, Any]:
    """The status as JSON-ready data (``store`` is ``None`` before the first import)."""
    state = State.load(settings.state_file)
    positions = state.positions.values()
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
        "store_bytes": store.size_bytes() if store else 0,
        "chunks": store.count(SearchFilter()) if store else 0,
        "transcripts": len(set(state.positions) - {str(settings.history_file)}),
        "bad_lines": sum(p.bad_lines for p in positions),
        "oversized_lines": sum(p.oversized_lines for p in positions),
        "projects": [],
    }
    if store is None:
        return report
    facets = store.facet("project_path", SearchFilter(), MAX_PROJECTS)
    names = display_names(str(p) for p, _ in facets)
    for project, chunks in facets:
        where = SearchFilter(projects=(str(project),))
        latest = store.latest(where) or {}
        report["projects"].append(
            {
                "project": names.get(str(project)) or latest.get("project") or str(project),
                "path": str(project),
                "sessions": len(store.facet("session_id", where, MAX_SESSIONS, exact=False)),  # only how many
                "chunks": chunks,
                "last_activity": latest.get("timestamp"),
            }
        )
    report["projects"].sort(key=lambda p: p["last_activity"] or "", reverse=True)
    return report


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
        ),
        f"transcripts: {report['transcripts']} read, {report['bad_lines']} bad lines, "
        f"{report['oversized_lines']} oversized lines skipped",
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
    else:
        lines.append("daemon:      not running (`selfreflect serve` keeps the index current)")
    projects = report["projects"]
    if not projects:
        return "\n".join([*lines, "", "Nothing indexed yet: run `selfreflect import`."])
    lines += ["", f"{'project':<32} {'sessions':>8} {'chunks':>8}  last activity"]
    for p in projects[:max_projects]:
        lines.append(f"{p['project'][:32]:<32} {p['sessions']:>8} {p['chunks']:>8}  {(p['last_activity'] or '')[:19]}")
    if max_projects is not None and len(projects) > max_projects:
        lines.append(f"... and {len(projects) - max_projects} more projects")
    return "\n".join(lines)
