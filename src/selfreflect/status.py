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
        "store_bytes": store.size_bytes() if store else 0,
        "chunks": store.count(SearchFilter()) if store else 0,
        "transcripts": len(state.positions),
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
                "sessions": len(store.facet("session_id", where, MAX_SESSIONS)),
                "chunks": chunks,
                "last_activity": latest.get("timestamp"),
            }
        )
    report["projects"].sort(key=lambda p: p["last_activity"] or "", reverse=True)
    return report
