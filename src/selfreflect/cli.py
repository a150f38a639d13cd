"""The command line: a thin face over the core.

It only translates arguments into settings and queries, and results into
text or JSON; domain errors become a message and an exit code here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from selfreflect import __version__
from selfreflect.errors import SelfReflectError, StoreLocked, TranscriptNotFound
from selfreflect.settings import Settings

EXIT_ERROR = 1  # bad input, bad settings, nothing found, an unusable data folder
EXIT_USAGE = 2  # click: an unknown option or a missing argument
EXIT_LOCKED = 3  # another process holds the store (an import, a daemon)

# commands a running daemon answers: they start without logging's imports (a
# tenth of their time) unless -v asks for it; without a daemon, what they log
# goes to stderr all the same (logging's last resort: warnings, unformatted)
ASKS_THE_DAEMON = {"search", "status", "show"}


class Context:
    """What every command gets: the settings, and the way to the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def connect(self, command: str) -> Any:
        """The :class:`~selfreflect.connect.Connection` for ``command``: a
        verified running daemon, else the store opened here."""
        from selfreflect.connect import Connection

        return Connection(self.settings, command)

    def no_daemon(self, command: str) -> None:
        """Refuse ``command`` while a daemon owns the store (it needs the store to itself).

        Raises:
            StoreLocked: a daemon serves this data dir.
        """
        daemon = self.connect(command).daemon()
        if daemon is not None:
            raise StoreLocked(f"the daemon (pid {daemon.pid}) owns the store: run `selfreflect stop` first", daemon.pid)

    def indexed(self) -> bool:
        """Anything to ask about: a store on disk, or a daemon serving one."""
        from selfreflect.running import running_daemon

        if self.settings.qdrant_url:  # a server holds it: ask it
            return True
        return (self.settings.store_dir / "meta.json").exists() or running_daemon(self.settings.data_dir) is not None

    @contextmanager
    def store(self, command: str) -> Iterator[tuple[Any, Any]]:
        """The store, held by this process, and the loaded model (``import``)."""
        from selfreflect.embed import make_embedder
        from selfreflect.store import open_store

        embedder = make_embedder(self.settings)
        store = open_store(self.settings, embedder.name, embedder.dim, command)  # locked: fail before the model
        try:
            embedder.load()
            yield store, embedder
        finally:
            store.close()


pass_context = click.make_pass_decorator(Context)


class Failure(click.ClickException):
    """A domain error as the user sees it: ``error: ...`` and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click sets it per class

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class Commands(click.Group):
    """Turns the library's domain errors into messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreLocked as exc:
            raise Failure(str(exc), EXIT_LOCKED) from exc
        except SelfReflectError as exc:
            raise Failure(str(exc), EXIT_ERROR) from exc
        except OSError as exc:  # the filesystem said no somewhere we did not foresee: say what, not how
            where = f" ({exc.filename})" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{where}", EXIT_ERROR) from exc


class SearchCommand(click.Command):
    """``search``: a query word that starts with ``-`` reads as an option;
    say how to search for it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes args
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if not exc.possibilities:  # not a typo of an option: likely words to search for
                import shlex

                at = next((i for i, a in enumerate(given) if a.startswith(exc.option_name)), len(given))
                fixed = shlex.join([*given[:at], "--", *given[at:]])
                hint = f"To search for text that starts with '-', put -- before it: selfreflect search {fixed}"
                raise click.NoSuchOption(exc.option_name, f"{exc.message}\n{hint}", ctx=exc.ctx) from None
            raise


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="selfreflect")
@click.option(
    "--claude-dir",
    type=click.Path(path_type=Path),
    help="Claude Code's folder [env CLAUDE_CONFIG_DIR; default ~/.claude].",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="selfreflect's data folder [env SELFREFLECT_HOME; default: the user data dir].",
)
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="TOML config file [env SELFREFLECT_CONFIG]."
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(
    ctx: click.Context, claude_dir: Path | None, data_dir: Path | None, config_file: Path | None, verbose: int
) -> None:
    """selfreflect: search Claude Code's own past conversations.

    Import the transcripts under ~/.claude/projects once with `selfreflect
    import`, then ask: `selfreflect search "docker memory limit"`.
    """
    if verbose or ctx.invoked_subcommand not in ASKS_THE_DAEMON:
        _log_to_stderr(verbose)
    try:
        settings = Settings.load({"claude_dir": claude_dir, "data_dir": data_dir}, config_file=config_file)
    except SelfReflectError as exc:
        raise Failure(str(exc), EXIT_ERROR) from exc
    ctx.obj = Context(settings)


def _log_to_stderr(verbose: int) -> None:
    """Log to stderr: warnings, or with ``-v`` what the process does (``-vv``: in detail)."""
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Entry point of the ``selfreflect`` command."""
    from selfreflect.system import private_files

    private_files()  # the store, the state, logs, reflections, daemon.json: the user's alone
    cli(prog_name="selfreflect")


@cli.command(name="import")
@click.option(
    "--claude-export",
    "claude_export",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Index a Claude.ai / Claude Desktop export instead: its conversations.json, or the ZIP it came in.",
)
@pass_context
def import_(ctx: Context, claude_export: Path | None) -> None:
    """Index every transcript that is not indexed yet (one-shot catch-up).

    Also the prompts of Claude Code's history.jsonl, which outlive the
    transcripts. Safe to run again at any time: what is already indexed is
    skipped, and an interrupted run resumes where it stopped. While the
    daemon runs, it asks the daemon to catch up and waits for it.

    With --claude-export, indexes the conversations of a Claude.ai export
    instead (read as a stream; importing it again adds nothing twice).
    """
    from selfreflect.discover import discover
    from selfreflect.importer import Importer
    from selfreflect.state import State

    if claude_export is not None:
        _import_export(ctx, claude_export)
        return
    files = discover(ctx.settings.projects_dir)  # a missing Claude dir fails before the model loads
    daemon = ctx.connect("import").daemon()
    if daemon is not None:
        _import_through(daemon, len(files), ctx.settings.token)
        _compact_through(daemon, ctx.settings.token, if_needed=True)
        _report_held_back(ctx.settings, files)
        return
    with ctx.store("import") as (store, embedder):
        importer = Importer(ctx.settings, store, embedder, State.load(ctx.settings.state_file))
        if sys.stderr.isatty():
            total = sum(f.size for f in files) + sum(t.size for t in importer.archive.gone())
            with click.progressbar(length=total, label="Indexing", file=sys.stderr, show_percent=True) as bar:
                summary = importer.run(progress=lambda transcript: bar.update(transcript.size))
        else:
            summary = importer.run()
        click.echo(_imported(summary))
        if store.needs_compaction():
            embedder.unload()  # its memory back before the merges' peak
            _compact(store)
    _report_held_back(ctx.settings, files)


def _imported(summary: Any) -> str:
    skipped = f", {summary.bad_lines} bad lines skipped" if summary.bad_lines else ""
    skipped += f", {summary.oversized_lines} oversized lines skipped" if summary.oversized_lines else ""
    skipped += f", {len(summary.failed_files)} unreadable" if summary.failed_files else ""
    skipped += f", {len(summary.skipped)} entries skipped (not transcripts we can read)" if summary.skipped else ""
    if summary.lines == 0 and not summary.failed_files:
        return f"Nothing new: {summary.files} transcripts already indexed{skipped} ({summary.seconds:.1f} s)"
    read = []
    if summary.files_read or summary.lines > summary.prompts:
        read.append(f"{summary.files_read} of {summary.files} files: {summary.lines - summary.prompts} new lines")
    if summary.prompts:
        read.append(f"{summary.prompts} new lines of history.jsonl")
    return f"Imported {'; '.join(read)}, {summary.chunks} chunks{skipped} in {summary.seconds:.1f} s"


def _import_export(ctx: Context, path: Path) -> None:
    """``import --claude-export``: the conversations of a Claude.ai export."""
    from selfreflect.importer import Importer
    from selfreflect.state import State

    daemon = ctx.connect("import").daemon()
    if daemon is not None:
        raise StoreLocked(
            f"the daemon (pid {daemon.pid}) owns the store: run `selfreflect stop`, import the export, "
            "then start the daemon again",
            daemon.pid,
        )
    with ctx.store("import") as (store, embedder):
        importer = Importer(ctx.settings, store, embedder, State.load(ctx.settings.state_file))
        if sys.stderr.isatty():
            with click.progressbar(length=1, label="Indexing", file=sys.stderr, show_percent=True) as bar:

                def shown(done: int, total: int) -> None:
                    bar.length = max(total, 1)
                    bar.update(done - bar.pos)

                summary = importer.import_export(path, shown)
        else:
            summary = importer.import_export(path)
    click.echo(
        f"Imported {summary.conversations} conversations of {path}: {summary.lines} messages, "
        f"{summary.chunks} new chunks in {summary.seconds:.1f} s"
    )


def _report_held_back(settings: Settings, files: list[Any]) -> None:
    """Say which transcripts end in a line that is not indexed yet, and why."""
    from selfreflect.discover import ACTIVE_SECONDS
    from selfreflect.state import State

    state = State.load(settings.state_file)
    reasons = [state.get(str(f.path)).held_back for f in files]
    writing, torn = reasons.count("writing"), reasons.count("torn")
    said = []
    if writing:
        said.append(
            f"{_count(writing, 'transcript')} still being written: an unfinished last line is read once it ends "
            f"(or once the file has been quiet for {ACTIVE_SECONDS // 60} minutes)"
        )
    if torn:
        said.append(
            f"{_count(torn, 'transcript')} {'ends' if torn == 1 else 'end'} in a torn line (no newline, not a "
            "whole record): that line is read if it is ever finished"
        )
    if said:
        click.echo(f"Held back: {'; '.join(said)}.")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


@cli.command()
@click.option("--project", help="A project, by name or path.")
@click.option("--session", help="A session id.")
@click.option("--transcript", help="A transcript file (its path).")
@click.option("--before", help="Everything older than this date or duration (2026-01-31, 90d).")
@click.option("--yes", is_flag=True, help="Do not ask (asked only on a terminal).")
@pass_context
def forget(
    ctx: Context, project: str | None, session: str | None, transcript: str | None, before: str | None, yes: bool
) -> None:
    """Remove conversations from the index, and keep them out for good.

    Give exactly one of --project, --session, --transcript, --before. What it
    names is deleted from the index now, and a tombstone keeps it from being
    indexed (or archived) again when the transcripts are read again (import,
    reindex). The archived copy of a transcript it leaves nothing of is
    deleted. The transcripts themselves are not touched.
    """
    from selfreflect.backend import forget_filter

    given = [(k, v) for k, v in (("project", project), ("session", session), ("transcript", transcript)) if v]
    given += [("before", before)] if before else []
    if len(given) != 1:
        raise SelfReflectError("give exactly one of --project, --session, --transcript, --before")
    ((kind, value),) = given
    forget_filter(kind, value)  # validates before anything is asked or removed
    if not ctx.indexed():
        raise SelfReflectError(f"nothing is indexed yet in {ctx.settings.data_dir}")
    if sys.stdin.isatty() and not yes:
        click.confirm(f"Forget every conversation of {kind} {value!r}, now and when it is read again?", abort=True)
    done = ctx.connect("forget").forget(kind, value)
    archived = done.get("archived_removed", 0)
    copies = f" and {_count(archived, 'archived transcript')}" if archived else ""
    click.echo(f"Forgot {done['removed']} chunks{copies} of {kind} {done['value']!r}; they stay out of the index.")


@cli.command()
@click.option("--keep-old", is_flag=True, help="Keep the old store folder (as store.old-TIME) instead of deleting it.")
@pass_context
def reindex(ctx: Context, keep_old: bool) -> None:
    """Rebuild the index from scratch: every transcript, every stored
    reflection, and the Claude.ai exports imported before (still on disk).

    For a damaged store, a store of another model, or after changing how
    chunks are made. Transcripts Claude Code has deleted are read from the
    archive. The old store is moved aside first and deleted once the new one
    is complete. Stop the daemon first (`selfreflect stop`). With a Qdrant
    server (QDRANT_URL), this machine's points are deleted and read again;
    other machines' points stay.
    """
    import shutil
    import time

    from selfreflect.archive import Archive
    from selfreflect.discover import discover
    from selfreflect.importer import Importer
    from selfreflect.lock import StoreLock
    from selfreflect.reflection import reindex_reflections
    from selfreflect.state import State

    settings = ctx.settings
    if next(Archive.of(settings).gone(), None) is None:
        discover(settings.projects_dir)  # a missing Claude dir fails before anything moves
    ctx.no_daemon("reindex")
    settings.ensure_data_dir()
    if settings.qdrant_url:
        from selfreflect.store import SearchFilter

        with ctx.store("reindex") as (store, embedder):
            dropped = store.delete(SearchFilter(host=settings.machine))
            state = State.load(settings.state_file)
            for path in list(state.positions):
                state.forget(path)
            state.save()
            importer = Importer(settings, store, embedder, state)
            summary = importer.run()
            reflections = reindex_reflections(store, embedder, settings.data_dir)
            exports = _reimport_exports(importer)
        click.echo(
            f"Rebuilt this machine's points ({settings.machine}; {dropped} dropped): {summary.files} transcripts, "
            f"{summary.chunks} chunks, {reflections} reflections{exports} in {summary.seconds:.1f} s"
        )
        return
    old = settings.data_dir / f"store.old-{time.strftime('%Y%m%d-%H%M%S')}"
    lock = StoreLock(settings.data_dir, "reindex")
    lock.acquire()
    try:
        if settings.store_dir.exists():
            settings.store_dir.rename(old)
    finally:
        lock.release()
    with ctx.store("reindex") as (store, embedder):
        importer = Importer(settings, store, embedder, State.load(settings.state_file))
        summary = importer.run()
        reflections = reindex_reflections(store, embedder, settings.data_dir)
        exports = _reimport_exports(importer)
        if store.needs_compaction():
            embedder.unload()
            _compact(store)
    if old.exists() and not keep_old:
        shutil.rmtree(old, ignore_errors=True)
    kept = f"; the old store is in {old}" if old.exists() else ""
    click.echo(
        f"Rebuilt the index: {summary.files} transcripts, {summary.chunks} chunks, "
        f"{reflections} reflections{exports} in {summary.seconds:.1f} s{kept}"
    )


@cli.command()
@pass_context
def compact(ctx: Context) -> None:
    """Merge the store's small segments into big ones.

    A search visits every segment: on a store of a quarter of a million
    chunks, searches get about twice as fast. `import` does it by
    itself when it is worth it, and so does the daemon once it has caught
    up (`auto_compact`). Takes minutes on a big store. While the daemon
    runs, it compacts a copy of the store in another process and swaps it
    in: searches and reading go on meanwhile (what is written meanwhile is
    written into the copy before the swap), and the disk needs room for
    the copy.
    """
    from selfreflect.embed import make_embedder
    from selfreflect.store import open_store

    if not ctx.indexed():
        click.echo("Nothing indexed yet: nothing to compact")
        return
    daemon = ctx.connect("compact").daemon()
    if daemon is not None:
        _compact_through(daemon, ctx.settings.token)
        return
    embedder = make_embedder(ctx.settings)  # its name and dimension: the model is not loaded
    store = open_store(ctx.settings, embedder.name, embedder.dim, "compact")
    try:
        _compact(store)
    finally:
        store.close()


def _compact(store: Any) -> None:
    import time

    started = time.monotonic()
    click.echo("Compacting the store (merging its small segments)...", err=True)
    before, after = store.compact()
    click.echo(f"Compacted the store: {before} segments into {after} in {time.monotonic() - started:.1f} s")


def _compact_through(daemon: Any, token: str | None, if_needed: bool = False) -> None:
    """``compact`` while the daemon owns the store: it compacts, we wait and report."""
    import time

    from selfreflect.client import DaemonUnavailable, post_json

    started = time.monotonic()
    try:
        try:
            job = post_json(daemon.url, "/api/compact", {"if_needed": if_needed}, token=token)["compaction"]
        except TranscriptNotFound:  # a 404: a daemon started by a version before it could
            if if_needed:
                return
            raise SelfReflectError(
                f"the daemon (pid {daemon.pid}) runs selfreflect {daemon.version}, which cannot compact while it "
                "serves: `selfreflect stop`, then `selfreflect compact`, then start it again"
            ) from None
        if job is None:  # if_needed, and it was not
            return
        click.echo(
            f"Compacting the store (the daemon, pid {daemon.pid}, in another process; searches and reading go on)...",
            err=True,
        )
        job = _follow(
            daemon,
            token,
            {"compaction": job},
            lambda health: health["compaction"]["running"],
            lambda health: f"{health['compaction']['phase']}: {health['compaction']['segments']} segments",
            0.5,
        )["compaction"]
    except DaemonUnavailable as exc:
        raise SelfReflectError(f"the daemon stopped while compacting ({exc}): the store is as it was") from exc
    if job["phase"] != "done":
        raise SelfReflectError(f"the daemon's compaction {job['phase']}: {job['error'] or 'the daemon stopped'}")
    took = time.monotonic() - started
    click.echo(
        f"Compacted the store: {job['segments_before']} segments into {job['segments']} in {took:.1f} s"
        f" ({job.get('caught_up', 0)} chunks written meanwhile)"
    )


def _reimport_exports(importer: Any) -> str:
    """Import again the Claude.ai exports imported before (``reindex``); what
    to add to its report (a moved or deleted export is named, not fatal)."""
    found = [Path(e) for e in importer.state.exports if Path(e).is_file()]
    missing = [e for e in importer.state.exports if not Path(e).is_file()]
    conversations = sum(importer.import_export(export).conversations for export in found)
    said = f", {conversations} conversations of {_count(len(found), 'export')}" if found else ""
    if missing:
        said += f" ({', '.join(missing)}: no longer there, run `selfreflect import --claude-export` where it is now)"
    return said


@cli.command()
@click.option("--to", "to", metavar="URL", help="Copy the embedded store into this Qdrant server collection.")
@click.option("--from", "from_", metavar="URL", help="Copy this Qdrant server collection into the embedded store.")
@pass_context
def migrate(ctx: Context, to: str | None, from_: str | None) -> None:
    """Copy the index between the embedded store and a Qdrant server, without
    embedding anything again.

    The collection is QDRANT_COLLECTION (with QDRANT_API_KEY). Interrupted,
    it resumes where it stopped when run again. At the end, the counts and a
    sample of points are compared. Stop the daemon first (`selfreflect stop`).
    """
    from dataclasses import replace

    from selfreflect.embed import make_embedder
    from selfreflect.migrate import checkpoint_file, migrate
    from selfreflect.state import State
    from selfreflect.store import open_store
    from selfreflect.store.server import ServerStore

    if bool(to) == bool(from_):
        raise SelfReflectError("give exactly one of --to URL and --from URL")
    settings = ctx.settings
    url = str(to or from_)
    model = make_embedder(settings)  # its name and size only: nothing is embedded
    embedded = open_store(replace(settings, qdrant_url=None), model.name, model.dim, "migrate")
    try:
        server = ServerStore.from_settings(replace(settings, qdrant_url=url), model.name, model.dim).open()
        try:
            source, target = (embedded, server) if to else (server, embedded)
            direction = "to" if to else "from"
            shown = (lambda n: click.echo(f"\r{n} points copied", nl=False, err=True)) if sys.stderr.isatty() else None
            done = migrate(source, target, settings.machine, checkpoint_file(settings.data_dir, direction, url), shown)
            state = State.load(settings.state_file)
            if state.store_id == source.id:  # every point read so far is in the target: go on from here
                state.moved_to(target.id)
                state.save()
        finally:
            server.close()
    finally:
        embedded.close()
    resumed = f" (resumed after {done.resumed_from})" if done.resumed_from else ""
    click.echo(
        f"Copied {done.copied} points {direction} {url}{resumed}: {done.source_count} in the source, "
        f"{done.target_count} in the target; {done.matched} of {done.sampled} sampled points equal."
    )


def _follow(
    daemon: Any,
    token: str | None,
    health: dict[str, Any],
    going: Callable[[dict[str, Any]], bool],
    each: Callable[[dict[str, Any]], str],
    every: float,
) -> dict[str, Any]:
    """Ask the daemon for its health every ``every`` seconds while
    ``going(health)``; on a terminal, ``each`` answer's line is shown in
    place. Returns the last answer.

    Raises:
        DaemonUnavailable: the daemon stopped answering.
    """
    import time

    from selfreflect.client import get_json

    while going(health):
        time.sleep(every)
        health = get_json(daemon.url, "/healthz", accept=(503,), token=token)
        shown = each(health)
        if sys.stderr.isatty():
            click.echo(f"\r{shown} ", nl=False, err=True)
    if sys.stderr.isatty():
        click.echo("", err=True)
    return health


def _import_through(daemon: Any, files: int, token: str | None) -> None:
    """``import`` while the daemon owns the store: it reads, we wait and report."""
    import time

    from selfreflect.client import DaemonUnavailable, post_json

    started = time.monotonic()
    click.echo(f"The daemon (pid {daemon.pid}, started by {daemon.started_by}) owns the store: it imports.", err=True)
    try:
        before = post_json(daemon.url, "/api/import", {}, token=token)
        told = set[str]()

        def each(health: dict[str, Any]) -> str:
            for problem in set(health["problems"]) - told:  # failing files are skipped and retried later
                click.echo(f"the daemon reports: {problem}", err=True)
                told.add(problem)
            return f"{health['files_pending']} transcripts left"

        now = _follow(daemon, token, before, lambda health: bool(health["files_pending"]), each, 0.2)
    except DaemonUnavailable as exc:
        raise SelfReflectError(f"the daemon stopped while importing ({exc}): run `selfreflect import` again") from exc
    lines = now["lines_read"] - before["lines_read"]
    chunks = now["chunks_indexed"] - before["chunks_indexed"]
    bad = now["bad_lines"] - before["bad_lines"]
    seconds = time.monotonic() - started
    if lines == 0:
        click.echo(f"Nothing new: {files} transcripts already indexed ({seconds:.1f} s)")
        return
    click.echo(
        f"Imported by the daemon: {lines} new lines, {chunks} chunks"
        f"{f', {bad} bad lines skipped' if bad else ''} in {seconds:.1f} s"
    )


@cli.command(cls=SearchCommand)
@click.argument("query", nargs=-1, required=True)
@click.option(
    "--also",
    "alternatives",
    multiple=True,
    help="Another phrasing of the same need, searched too and fused (repeatable, up to 3).",
)
@click.option("--project", "projects", multiple=True, help="Only this project (name or path; repeatable).")
@click.option("--since", help="Only after this date or duration ago (2026-01-31, 7d, 12h).")
@click.option("--until", help="Only before this date or duration ago.")
@click.option("--session", help="Only this session id.")
@click.option("--file", "file_", help="Only conversations that read or edited this file (path suffix).")
@click.option("--branch", help="Only this git branch.")
@click.option("--tool", help="Only chunks that used this tool (Bash, Edit, ...).")
@click.option("--host", help="Only what this machine wrote (a Qdrant server shared by many machines).")
@click.option("--no-sidechains", is_flag=True, help="Leave out sub-agent conversations.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 200))
@click.option(
    "--min-score",
    type=float,
    help="Drop results whose relevance (0 to 1) is below this; 0.32 and up is a strong match.",
)
@click.option("--decay/--no-decay", default=False, help="Favour recent conversations (recency decay; off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON.")
@pass_context
def search(
    ctx: Context,
    query: tuple[str, ...],
    alternatives: tuple[str, ...],
    projects: tuple[str, ...],
    since: str | None,
    until: str | None,
    session: str | None,
    file_: str | None,
    branch: str | None,
    tool: str | None,
    host: str | None,
    no_sidechains: bool,
    limit: int,
    min_score: float | None,
    decay: bool,
    as_json: bool,
) -> None:
    """Search all projects' conversations (hybrid: meaning + exact words).

    Uses the running daemon when there is one (it owns the store).
    """
    from selfreflect.query import STRONG, Decay, SearchRequest

    request = SearchRequest(
        " ".join(query),
        limit=limit,
        projects=projects,
        since=since,
        until=until,
        session=session,
        file=file_,
        branch=branch,
        tool=tool,
        host=host,
        include_sidechains=not no_sidechains,
        min_score=min_score,
        decay=decay,
        alternatives=alternatives,
    )
    request.query(Decay())  # validates before any I/O
    if not ctx.indexed():
        raise SelfReflectError(f"nothing is indexed yet in {ctx.settings.data_dir}: run `selfreflect import` first")
    response = ctx.connect("search").search(request)
    if as_json:
        click.echo(json.dumps(response.to_json(), ensure_ascii=False, indent=2))
        return
    if not response.results:
        click.echo("No results.")
        return
    for r in response.results:
        when = (r.timestamp or "")[:16].replace("T", " ")
        click.echo(
            click.style(f"{r.relevance:.2f}", fg="green" if r.relevance >= STRONG else "yellow")
            + f"  {r.project}  {when}  "
            + click.style(f"{r.transcript}:{r.line_start}-{r.line_end}", fg="cyan")
        )
        if r.about():
            click.echo(click.style(f"    {r.about()}", dim=True))
        click.echo(f"    {r.snippet}")
        if len(r.found_by) > 1 or (r.found_by and r.found_by[0] != response.query):
            click.echo(click.style(f"    found by: {' | '.join(r.found_by)}", dim=True))
        click.echo()
    count = len(response.results)
    click.echo(f"{count} result{'s' if count != 1 else ''} in {response.took_ms:.0f} ms", err=True)
    best = response.results[0].relevance
    if best < STRONG:
        click.echo(f"No strong match: the best relevance is {best:.2f} ({STRONG} and up is strong).", err=True)


@cli.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), help="HTTP port on 127.0.0.1 [env SELFREFLECT_PORT; default 7718]."
)
@click.option(
    "--if-not-running",
    is_flag=True,
    help="Exit 0 instead of 3 when a daemon already serves this data dir (for service managers).",
)
@click.option("--started-by", default="serve", hidden=True, help="Who started it (shown by status).")
@pass_context
def serve(ctx: Context, port: int | None, if_not_running: bool, started_by: str) -> None:
    """Run the daemon: stream new transcript lines into the index, serve HTTP.

    Owns the store while it runs; `search`, `status`, `show`, `import` and
    `selfreflect mcp` go through it. `selfreflect stop`, SIGTERM or Ctrl-C
    stops it cleanly; a second Ctrl-C forces the exit. Exits 3 when another
    daemon serves the data dir; waits while an import holds the store.
    """
    import dataclasses
    import logging
    import time

    from selfreflect.daemon import Daemon, DaemonRunning
    from selfreflect.http import serve as run_server
    from selfreflect.lock import read_owner

    settings = ctx.settings if port is None else dataclasses.replace(ctx.settings, port=port)
    settings.ensure_data_dir()
    level = logging.getLogger().getEffectiveLevel()
    log = logging.getLogger("selfreflect")
    log.setLevel(min(level, logging.INFO))
    waiting = False
    while True:
        try:
            run_server(Daemon(settings, started_by), log_level="info" if level <= logging.INFO else "warning")
            return
        except StoreLocked as exc:
            owner = read_owner(settings.data_dir)
            daemon_won = isinstance(exc, DaemonRunning) or (owner is not None and owner.command == "serve")
            if daemon_won and (if_not_running or started_by.startswith("mcp")):
                # expected when several clients start one at once: not an error, and no error line in serve.log
                log.info("another daemon won: %s", exc)
                if if_not_running:
                    return
                raise click.exceptions.Exit(EXIT_LOCKED) from exc
            if daemon_won or started_by.startswith("mcp"):
                raise  # a daemon runs; or an MCP client falls back at once rather than wait
            if not waiting:
                log.warning("%s: waiting for it to finish", exc)
                waiting = True
            time.sleep(2.0)


@cli.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for it to finish its batch.")
@pass_context
def stop(ctx: Context, timeout: float) -> None:
    """Stop the daemon serving this data dir (it finishes its batch first)."""
    import time

    from selfreflect.system import is_same_process, terminate

    daemon = ctx.connect("stop").daemon()
    if daemon is None:
        click.echo(f"No daemon is running for {ctx.settings.data_dir}.")
        return
    terminate(daemon.pid)
    deadline = time.monotonic() + timeout
    while is_same_process(daemon.pid, daemon.process_started):
        if time.monotonic() > deadline:
            raise SelfReflectError(f"the daemon (pid {daemon.pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.1)
    click.echo(f"Stopped the daemon (pid {daemon.pid}, started by {daemon.started_by}).")


@cli.command(name="mcp")
@click.option(
    "--no-daemon",
    is_flag=True,
    envvar="SELFREFLECT_NO_DAEMON",
    help="Never start the daemon: open the store per call instead [env SELFREFLECT_NO_DAEMON=1].",
)
@pass_context
def mcp_command(ctx: Context, no_daemon: bool) -> None:
    """MCP over stdio, for `claude mcp add selfreflect -- selfreflect mcp`.

    Talks to the running daemon, and starts it (detached) when none runs, so
    new lines keep being indexed while Claude works. stdout carries protocol
    only; logs go to stderr.
    """
    from selfreflect.mcp import run_stdio

    run_stdio(ctx.settings, start_daemon=not no_daemon)


@cli.group()
def service() -> None:
    """Run the daemon at login (systemd user unit, launchd agent)."""


@service.command(name="install")
@click.option("--print", "print_only", is_flag=True, help="Only print the file; write nothing.")
@pass_context
def service_install(ctx: Context, print_only: bool) -> None:
    """Write the service file for this platform and print it.

    Nothing is enabled or started: the command that does it is printed.
    """
    from selfreflect.service import install, service_file

    unit = service_file(ctx.settings)
    if not print_only:
        install(unit)
        click.echo(f"Wrote {unit.path}:\n")
    click.echo(unit.text)
    click.echo(f"To start it now and at every login: {unit.enable}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """What is indexed: per project sessions, chunks and last activity; the daemon."""
    from selfreflect.status import status_report, status_text

    settings = ctx.settings
    report = ctx.connect("status").status() if ctx.indexed() else status_report(settings, None)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    click.echo(status_text(report))


@cli.command()
@click.argument("target")
@click.option(
    "--line", "line", type=click.IntRange(min=1), help="The line to centre on [default: the cited lines, else 1]."
)
@click.option(
    "--context", "context", type=click.IntRange(0, 50), default=5, show_default=True, help="Lines before and after."
)
@pass_context
def show(ctx: Context, target: str, line: int | None, context: int) -> None:
    """Show the conversation around a line.

    TARGET is what search prints: a transcript path, PATH:LINE or
    PATH:START-END (those lines and the context around them), a session id
    or the start of one, reflections.jsonl:LINE, history.jsonl:LINE, or a
    Claude.ai export's EXPORT:CONVERSATION:FIRST-LAST (message numbers; a
    message uuid in their place, or a conversation uuid alone, works too).
    """
    import os

    from selfreflect.archive import Archive
    from selfreflect.conversation import find_transcript, parse_citation, read_conversation

    settings = ctx.settings
    found: dict[str, Any] | None = None
    local = Path(os.path.expanduser(parse_citation(target).name))
    if not local.is_file() and ctx.indexed():
        try:
            found = ctx.connect("show").read_conversation(target, line, context, context)
        except TranscriptNotFound:
            found = None  # not indexed: look on disk
    if found is None:
        path = local if local.is_file() else find_transcript(settings, target, None)
        found = read_conversation(path, target, line, context, context, settings.max_line_bytes, Archive.of(settings))
    click.echo(click.style(found["transcript"], fg="cyan"))
    for entry in found["lines"]:
        cited = found["line"] <= entry["line"] <= found["line_end"]
        marker = ">" if cited else " "
        when = (entry["timestamp"] or "")[:19].replace("T", " ")
        click.echo(click.style(f"{marker}{entry['line']:>6}  {entry['kind']:<10} {when}", bold=cited))
        for text_line in entry["text"].splitlines() or [""]:
            click.echo(f"         {text_line}")


if __name__ == "__main__":  # pragma: no cover
    main()
