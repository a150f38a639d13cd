"""The command line: a thin face over the core.

It only translates arguments into settings and queries, and results into
text or JSON; domain errors become a message and an exit code here.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from selfreflect import __version__
from selfreflect.errors import SelfReflectError, StoreLocked, TranscriptNotFound
from selfreflect.settings import Settings

EXIT_ERROR = 1
EXIT_LOCKED = 3

log = logging.getLogger("selfreflect")


class Context:
    """What every command gets: the settings, and the store opened on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def from_daemon(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        """The daemon's answer, or ``None`` when no daemon serves this data dir."""
        from selfreflect.client import DaemonUnavailable, get_json
        from selfreflect.daemon import running_daemon

        daemon = running_daemon(self.settings.data_dir)
        if daemon is None:
            return None
        try:
            return get_json(daemon.url, path, params)
        except DaemonUnavailable:
            return None  # gone or still starting: the store decides (it may be locked)

    @contextmanager
    def store(self, load_model: bool = True) -> Iterator[tuple[Any, Any]]:
        from selfreflect.embed import OnnxEmbedder
        from selfreflect.store import open_store

        embedder = OnnxEmbedder()
        store = open_store(self.settings, embedder.name, embedder.dim)  # a locked store fails before the model loads
        try:
            if load_model:
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
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.load({"claude_dir": claude_dir, "data_dir": data_dir}, config_file=config_file)
    except SelfReflectError as exc:
        raise Failure(str(exc), EXIT_ERROR) from exc
    ctx.obj = Context(settings)


def main() -> None:
    """Entry point of the ``selfreflect`` command."""
    cli(prog_name="selfreflect")


@cli.command(name="import")
@pass_context
def import_(ctx: Context) -> None:
    """Index every transcript that is not indexed yet (one-shot catch-up).

    Safe to run again at any time: what is already indexed is skipped, and an
    interrupted run resumes where it stopped.
    """
    from selfreflect.discover import discover
    from selfreflect.importer import Importer
    from selfreflect.state import State

    files = discover(ctx.settings.projects_dir)  # a missing Claude dir fails before the model loads
    with ctx.store() as (store, embedder):
        importer = Importer(ctx.settings, store, embedder, State.load(ctx.settings.state_file))
        if sys.stderr.isatty():
            total = sum(f.size for f in files)
            with click.progressbar(length=total, label="Indexing", file=sys.stderr, show_percent=True) as bar:
                summary = importer.run(progress=lambda transcript: bar.update(transcript.size))
        else:
            summary = importer.run()
    failed = f", {len(summary.failed_files)} unreadable" if summary.failed_files else ""
    click.echo(
        f"Imported {summary.files_read} of {summary.files} files: {summary.lines} new lines, "
        f"{summary.chunks} chunks, {summary.bad_lines} bad lines skipped"
        f"{f', {summary.oversized_lines} oversized lines skipped' if summary.oversized_lines else ''}"
        f"{failed} in {summary.seconds:.1f} s"
    )


@cli.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--project", "projects", multiple=True, help="Only this project (name or path; repeatable).")
@click.option("--since", help="Only after this date or duration ago (2026-01-31, 7d, 12h).")
@click.option("--until", help="Only before this date or duration ago.")
@click.option("--session", help="Only this session id.")
@click.option("--file", "file_", help="Only conversations that read or edited this file (path suffix).")
@click.option("--branch", help="Only this git branch.")
@click.option("--tool", help="Only chunks that used this tool (Bash, Edit, ...).")
@click.option("--no-sidechains", is_flag=True, help="Leave out sub-agent conversations.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 200))
@click.option("--min-score", type=float, help="Drop results scoring below this (fused score, at most ~0.033).")
@click.option("--decay/--no-decay", default=False, help="Favour recent conversations (recency decay; off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON.")
@pass_context
def search(
    ctx: Context,
    query: tuple[str, ...],
    projects: tuple[str, ...],
    since: str | None,
    until: str | None,
    session: str | None,
    file_: str | None,
    branch: str | None,
    tool: str | None,
    no_sidechains: bool,
    limit: int,
    min_score: float | None,
    decay: bool,
    as_json: bool,
) -> None:
    """Search all projects' conversations (hybrid: meaning + exact words).

    Uses the running daemon when there is one (it owns the store).
    """
    from selfreflect.search import Decay, SearchResponse, make_query
    from selfreflect.search import search as run_search

    text = " ".join(query)
    options: dict[str, Any] = {"projects": projects, "since": since, "until": until, "session": session}
    options |= {"file": file_, "branch": branch, "tool": tool}
    options |= {"include_sidechains": not no_sidechains, "min_score": min_score}
    settings = ctx.settings
    options["decay"] = Decay(settings.decay_half_life_days, settings.decay_weight) if decay else None
    search_query = make_query(text, limit=limit, **options)  # validates before any I/O
    doc = ctx.from_daemon("/api/search", [("q", text), ("limit", str(limit)), *search_params(options)])
    if doc is not None:
        response = SearchResponse.from_json(doc)
    else:
        with ctx.store() as (store, embedder):
            response = run_search(store, embedder, search_query)
    if as_json:
        click.echo(json.dumps(response.to_json(), ensure_ascii=False, indent=2))
        return
    if not response.results:
        click.echo("No results.")
        return
    for r in response.results:
        when = (r.timestamp or "")[:16].replace("T", " ")
        click.echo(
            click.style(f"{r.score:.4f}", fg="green")
            + f"  {r.project}  {when}  "
            + click.style(f"{r.transcript}:{r.line_start}-{r.line_end}", fg="cyan")
        )
        click.echo(f"    {r.snippet}\n")
    click.echo(f"{len(response.results)} results in {response.took_ms:.0f} ms", err=True)


def search_params(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Search options as the daemon's ``/api/search`` parameters."""
    params = [("project", p) for p in options["projects"]]
    params += [
        (k, str(options[k]))
        for k in ("since", "until", "session", "file", "branch", "tool", "min_score")
        if options[k] is not None
    ]
    if not options["include_sidechains"]:
        params.append(("no_sidechains", "1"))
    if options.get("decay"):
        params.append(("decay", "1"))
    return params


@cli.command()
@click.option(
    "--port", type=click.IntRange(0, 65535), help="HTTP port on 127.0.0.1 [env SELFREFLECT_PORT; default 7718]."
)
@pass_context
def serve(ctx: Context, port: int | None) -> None:
    """Run the daemon: stream new transcript lines into the index, serve HTTP.

    Owns the store while it runs; `search` and `status` go through it.
    SIGTERM or Ctrl-C stops it cleanly; a second Ctrl-C forces the exit.
    """
    import dataclasses

    from selfreflect.daemon import Daemon
    from selfreflect.http import serve as run_server

    settings = ctx.settings if port is None else dataclasses.replace(ctx.settings, port=port)
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("selfreflect").setLevel(min(level, logging.INFO))
    run_server(Daemon(settings), log_level="info" if level <= logging.INFO else "warning")


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
    """What is indexed: per project sessions, chunks and last activity."""
    from selfreflect.status import status_report

    settings = ctx.settings
    report: dict[str, Any] | None = ctx.from_daemon("/api/status")
    if report is None and not (settings.store_dir / "meta.json").exists():
        report = status_report(settings, None)  # nothing indexed yet
    elif report is None:
        with ctx.store(load_model=False) as (store, _):
            report = status_report(settings, store)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    click.echo(f"data dir:    {report['data_dir']}")
    click.echo(f"claude dir:  {report['claude_dir']}")
    click.echo(f"model:       {report['model']} ({report['dim']} dimensions)")
    click.echo(f"store:       {report['store_bytes'] / 1e6:.1f} MB, {report['chunks']} chunks")
    click.echo(
        f"transcripts: {report['transcripts']} read, {report['bad_lines']} bad lines, "
        f"{report['oversized_lines']} oversized lines skipped"
    )
    if not report["projects"]:
        click.echo("\nNothing indexed yet: run `selfreflect import`.")
        return
    click.echo(f"\n{'project':<32} {'sessions':>8} {'chunks':>8}  last activity")
    for p in report["projects"]:
        click.echo(f"{p['project'][:32]:<32} {p['sessions']:>8} {p['chunks']:>8}  {(p['last_activity'] or '')[:19]}")


@cli.command()
@click.argument("target")
@click.option("--line", "line", type=click.IntRange(min=1), default=1, show_default=True, help="The line to centre on.")
@click.option(
    "--context", "context", type=click.IntRange(min=0), default=5, show_default=True, help="Lines before and after."
)
@pass_context
def show(ctx: Context, target: str, line: int, context: int) -> None:
    """Show the conversation around a line: TARGET is a session id or a transcript path."""
    from selfreflect.conversation import excerpt, find_transcript

    settings = ctx.settings
    path = Path(target)
    if not path.is_file():
        if (settings.store_dir / "meta.json").exists():
            with ctx.store(load_model=False) as (store, _):
                path = find_transcript(settings, target, store)
        else:
            path = find_transcript(settings, target, None)
    try:
        lines = excerpt(path, line, context, context, settings.max_line_bytes)
    except OSError as exc:
        raise TranscriptNotFound(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not lines:
        raise TranscriptNotFound(f"{path} has no line {line}")
    click.echo(click.style(str(path), fg="cyan"))
    for entry in lines:
        marker = ">" if entry.line == line else " "
        when = (entry.timestamp or "")[:19].replace("T", " ")
        click.echo(click.style(f"{marker}{entry.line:>6}  {entry.kind:<10} {when}", bold=entry.line == line))
        for text_line in entry.text.splitlines() or [""]:
            click.echo(f"         {text_line}")


if __name__ == "__main__":  # pragma: no cover
    main()
