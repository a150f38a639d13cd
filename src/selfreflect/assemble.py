"""Assemble: records to exchanges, a user prompt and the work that answers it.

The importer feeds records in file order; the :class:`Assembler` hands back
each exchange as soon as the next one starts, and the open (last) exchange on
request. Quirks handled here (``reference/claude-code-transcripts.md``):

- one streamed assistant reply is several lines sharing ``message.id``: their
  blocks are merged into one turn (§6);
- a record replayed with the same ``uuid`` is kept once (§6, edge case
  ``duplicate-last-line``);
- ``tool_result`` blocks are paired with their ``tool_use`` by id (§6);
- sidechain and sub-agent lines are marked (§7), an inline (1.0.x) sidechain
  linked to the ``Task`` call whose prompt it answers, and the ``Warmup``
  exchange a 2.0.x sub-agent file opens with is left out (§7);
- a compaction summary (``isCompactSummary``) opens an exchange of its own,
  marked (§7);
- a ``<persisted-output>`` tool result is read from ``<session>/tool-results/``
  (its preview when that is gone), kept like inline output (§2);
- the project is the record's ``cwd``, never the folder name (§2).

Session titles (``custom-title``, ``ai-title``, ``summary`` lines) are not
conversation: :func:`title_of` reads them for the importer.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from selfreflect.tail import open_regular

PART_CHARS = 32_000  # one block's text kept at most (about 8k word-pieces): the rest is a dump
RESULT_CHARS = 300  # head of a tool's output
ERROR_CHARS = 600  # head of a tool's error
INPUT_CHARS = 300  # head of a tool input we keep (a prompt, a new string)
RECENT_UUIDS = 4096
PROMPT_CHARS = 1000  # of a prompt, whitespace collapsed, that identify it (prompt_digest)
SNAPSHOT_UUIDS = 64  # uuids carried across a resume (replays sit next to their original)
TOOL_NAMES = 64  # tool calls remembered to name their results (parallel calls are a few)
AGENT_CALLS = 16  # Task calls remembered to link the inline sidechains that answer them
TITLE_CHARS = 200
# title lines, by rank: a user's /rename wins over the AI's title, which wins
# over a pre-2.0 summary line (the agent SDK's order, reference §4)
TITLES = {"custom-title": (3, "customTitle"), "ai-title": (2, "aiTitle"), "summary": (1, "summary")}

_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.S)
_BLANKS = re.compile(r"\n{3,}")
_ERRORISH = re.compile(r"error|exception|traceback|failed|fatal|panic", re.I)
_INTERRUPT = "[Request interrupted by user"
_COMMAND = re.compile(r"<command-name>(.*?)</command-name>", re.S)
_COMMAND_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.S)
_BASH_INPUT = re.compile(r"^<bash-input>(.*?)</bash-input>$", re.S)
_WARMUP = "Warmup"  # the first prompt of a 2.0.x sub-agent file, answered with a greeting
_PERSISTED = re.compile(
    r"<persisted-output>\s*Output too large[^\n]*?saved to: (?P<path>[^\n]+)\n"
    r"(?:\s*Preview[^\n]*:\n(?P<preview>.*?))?\s*(?:</persisted-output>\s*)?$",
    re.S,
)


@dataclass
class Part:
    """A piece of an exchange that came from lines ``line_start..line_end``."""

    role: str  # user | assistant | thinking | tool | result | error | summary | note
    text: str
    line_start: int
    line_end: int
    message_id: str | None = None
    tool: str | None = None
    files: tuple[str, ...] = ()
    offset: int = 0  # byte offset of line_start, where a re-read can begin


@dataclass
class Exchange:
    """A user prompt and the assistant work that answers it.

    A long exchange is sealed as it goes (see :func:`selfreflect.chunk.seal`):
    its final chunks are written and its parts dropped, ``ordinal_base``
    counts them, and ``resume_offset``/``resume_line`` say where a re-read of
    what is left begins.
    """

    key: str  # uuid (or line) of its first record: stable across re-reads
    start_offset: int
    start_line: int
    session_id: str
    cwd: str
    git_branch: str
    timestamp: str
    sidechain: bool
    agent_id: str | None
    parts: list[Part] = field(default_factory=list)
    parent_tool_use_id: str | None = None  # the Task/Agent call a sub-agent or inline sidechain answers
    compact_summary: bool = False  # it opens with the summary of the conversation compacted before it
    ordinal_base: int = 0
    resume_offset: int = -1
    resume_line: int = -1
    prompt: str = ""  # prompt_digest of the user's words that open it ("": it opens otherwise)

    def __post_init__(self) -> None:
        if self.resume_offset < 0:
            self.resume_offset, self.resume_line = self.start_offset, self.start_line

    @property
    def line_end(self) -> int:
        return max((p.line_end for p in self.parts), default=self.resume_line)


class Assembler:
    """Turns the records of one transcript, in file order, into exchanges.

    Args:
        session_id: used when records carry none (the file stem).
        agent_id: set for sub-agent files.
        parent_tool_use_id: the tool call that started a sub-agent file (its ``.meta.json``).
        tool_results: the session's ``tool-results/`` folder, where
            ``<persisted-output>`` results are read from.
    """

    def __init__(
        self,
        session_id: str,
        agent_id: str | None = None,
        parent_tool_use_id: str | None = None,
        tool_results: Path | None = None,
    ) -> None:
        self.default_session = session_id
        self.agent_id = agent_id
        self.parent_tool_use_id = parent_tool_use_id
        self.tool_results = tool_results
        self.open: Exchange | None = None
        self.cwd = ""
        self.git_branch = ""
        self._seen: OrderedDict[str, int] = OrderedDict()  # uuid -> byte offset of its line
        self._tool_names: dict[str, str] = {}
        self._agent_calls: OrderedDict[str, str] = OrderedDict()  # a Task call's prompt -> its id
        self._warmup = False  # inside the Warmup exchange of a 2.0.x sub-agent file

    def snapshot(self, sealed: bool = True) -> dict[str, Any] | None:
        """What a re-read from the open exchange's resume point needs to carry
        on exactly where this assembler is (saved with the read position).
        Not ``sealed`` (the re-read starts with the open exchange), only what
        links records across exchanges: the Task calls an inline sidechain
        may still answer, a Warmup exchange under way (``None``: none)."""
        links: dict[str, Any] = {"agents": dict(self._agent_calls)} if self._agent_calls else {}
        if self._warmup:
            links["warmup"] = True
        if not sealed:
            return links or None
        exchange = None
        resume = self.open.resume_offset if self.open is not None else None
        if self.open is not None:
            exchange = {k: v for k, v in vars(self.open).items() if k != "parts"}
        # only records before the resume point: the ones after it are read again
        seen = [u for u, offset in self._seen.items() if resume is None or offset < resume]
        return {
            "exchange": exchange,
            "cwd": self.cwd,
            "git_branch": self.git_branch,
            "seen": seen[-SNAPSHOT_UUIDS:],
            "tools": dict(self._tool_names),
            **links,
        }

    @classmethod
    def restore(
        cls,
        session_id: str,
        agent_id: str | None,
        snapshot: dict[str, Any] | None,
        parent_tool_use_id: str | None = None,
        tool_results: Path | None = None,
    ) -> Assembler:
        """An assembler that continues from a :meth:`snapshot`."""
        assembler = cls(session_id, agent_id, parent_tool_use_id, tool_results)
        if snapshot:
            if snapshot.get("exchange"):
                assembler.open = Exchange(**snapshot["exchange"])
            assembler.cwd = snapshot.get("cwd", "")
            assembler.git_branch = snapshot.get("git_branch", "")
            assembler._seen.update(dict.fromkeys(snapshot.get("seen", []), -1))
            assembler._tool_names.update(snapshot.get("tools", {}))
            assembler._agent_calls.update(snapshot.get("agents", {}))
            assembler._warmup = bool(snapshot.get("warmup"))
        return assembler

    def feed(self, line: int, offset: int, record: dict[str, Any]) -> Exchange | None:
        """Take one record; return the exchange it closed, if any."""
        kind = record.get("type")
        if kind not in ("user", "assistant"):
            return None  # metadata, progress (duplicates sub-agents), system
        uuid = record.get("uuid")
        if isinstance(uuid, str) and uuid in self._seen:
            return None
        message = record.get("message")
        if not isinstance(message, dict):
            return None  # a record that says nothing claims no uuid: the valid one after it stays
        if isinstance(record.get("cwd"), str) and record["cwd"]:
            self.cwd = record["cwd"]
        if isinstance(record.get("gitBranch"), str):
            self.git_branch = record["gitBranch"]
        if self._is_warmup(kind, record, message):
            return None
        parts = self.parts_of(line, record, offset)
        if not parts:
            return None
        if isinstance(uuid, str):
            self._seen[uuid] = offset
            if len(self._seen) > RECENT_UUIDS:
                self._seen.popitem(last=False)
        starts = kind == "user" and parts[0].role in ("user", "summary")
        sidechain = bool(record.get("isSidechain"))
        session = _str(record.get("sessionId")) or self.default_session
        closed = None
        current = self.open
        if current is None or starts or current.sidechain != sidechain or current.session_id != session:
            closed, self.open = (
                current,
                Exchange(
                    key=uuid if isinstance(uuid, str) else f"line-{line}",
                    start_offset=offset,
                    start_line=line,
                    session_id=session,
                    cwd=self.cwd,
                    git_branch=self.git_branch,
                    timestamp=_str(record.get("timestamp")) or (current.timestamp if current else ""),
                    sidechain=sidechain,
                    agent_id=_str(record.get("agentId")) or self.agent_id,
                    parent_tool_use_id=self._parent_call(sidechain, parts[0]),
                    compact_summary=parts[0].role == "summary",
                ),
            )
            # Replays and tool results are matched within an exchange only, so
            # a re-read that starts at an exchange sees what a full read sees.
            self._seen.clear()
            self._tool_names.clear()
            if isinstance(uuid, str):
                self._seen[uuid] = offset
            parts = self.parts_of(line, record, offset)  # its own tool calls, again
            self.open.prompt = prompt_digest(" ".join(p.text for p in parts if p.role == "user"))
        assert self.open is not None
        for part in parts:
            _append(self.open.parts, part)
        return closed

    def _is_warmup(self, kind: Any, record: dict[str, Any], message: dict[str, Any]) -> bool:
        """The ``Warmup`` prompt that opens a 2.0.x sub-agent file, and the
        greeting that answers it (reference §7): not conversation."""
        if kind == "user" and record.get("isSidechain"):
            self._warmup = record.get("parentUuid") is None and message.get("content") == _WARMUP
        return self._warmup

    def _parent_call(self, sidechain: bool, first: Part) -> str | None:
        """The tool call a sidechain exchange answers: the file's own (a
        sub-agent file), else the Task call whose prompt opens it (inline)."""
        if not sidechain:
            return None
        if self.parent_tool_use_id:
            return self.parent_tool_use_id
        return self._agent_calls.get(first.text[:INPUT_CHARS]) if first.role == "user" else None

    def parts_of(self, line: int, record: dict[str, Any], offset: int = 0) -> list[Part]:
        """The parts one record contributes (remembering its tool calls, so a
        later result is named after its call)."""
        kind, message = record.get("type"), record.get("message")
        if kind not in ("user", "assistant") or not isinstance(message, dict):
            return []
        parts = list(self._parts(str(kind), line, record, message))
        for part in parts:
            part.offset = offset
        return parts

    def note_calls(self, record: dict[str, Any]) -> None:
        """Remember the tool calls one record makes, so a later result is
        named after its call, without making its parts (an excerpt's lines
        before its window)."""
        message = record.get("message")
        if record.get("type") in ("user", "assistant") and isinstance(message, dict):
            for block in _as_blocks(message.get("content")):
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    self._call(block)

    def _call(self, block: dict[str, Any]) -> tuple[str, str | None]:
        """A tool call's name and id, remembered (the last ``TOOL_NAMES``)."""
        name = _str(block.get("name")) or "tool"
        tool_id = _str(block.get("id"))
        if tool_id:
            self._tool_names[tool_id] = name
            if len(self._tool_names) > TOOL_NAMES:
                del self._tool_names[next(iter(self._tool_names))]
        return name, tool_id

    def _parts(self, kind: str, line: int, record: dict[str, Any], message: dict[str, Any]) -> Iterator[Part]:
        content = message.get("content")
        blocks = _as_blocks(content)
        message_id = _str(message.get("id")) if kind == "assistant" else None
        if kind == "user" and record.get("isCompactSummary"):
            text = _join_text(blocks)
            if text:
                yield Part("summary", text, line, line)
            return
        for block in blocks:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                text = _clean(block.get("text"))
                if not text:
                    continue
                if kind == "assistant":
                    yield Part("assistant", text, line, line, message_id)
                elif record.get("isMeta"):
                    # Injected reminders repeat every turn; keep them only
                    # when they carry a real error (a hook's compiler output).
                    if _ERRORISH.search(text):
                        yield Part("note", text[:ERROR_CHARS], line, line)
                elif text.startswith(_INTERRUPT):
                    yield Part("note", text, line, line)
                else:
                    yield Part("user", text, line, line)
            elif btype == "thinking":
                text = _clean(block.get("thinking"))
                if text:
                    yield Part("thinking", text, line, line, message_id)
            elif btype == "tool_use":
                name, tool_id = self._call(block)
                text, files = describe_tool_use(name, block.get("input"))
                prompt = block.get("input", {}).get("prompt") if isinstance(block.get("input"), dict) else None
                if name in ("Task", "Agent") and tool_id and isinstance(prompt, str) and not record.get("isSidechain"):
                    self._agent_calls[_clean(prompt)[:INPUT_CHARS]] = tool_id
                    if len(self._agent_calls) > AGENT_CALLS:
                        self._agent_calls.popitem(last=False)
                yield Part("tool", text, line, line, message_id, tool=name, files=files)
            elif btype == "tool_result":
                name = self._tool_names.get(_str(block.get("tool_use_id")) or "", "tool")
                output = _clean(_join_text(_as_blocks(block.get("content"))))
                if output.startswith("<persisted-output>"):
                    output = self._persisted(output)
                if block.get("is_error"):
                    yield Part("error", output[:ERROR_CHARS], line, line, tool=name)
                elif output:
                    yield Part("result", output[:RESULT_CHARS], line, line, tool=name)

    def _persisted(self, output: str) -> str:
        """A result Claude Code saved to ``<session>/tool-results/`` (2.1.2+:
        too large to keep inline): the head of the saved output, else the
        preview the line carries (the same head, when the file is gone)."""
        found = _PERSISTED.match(output)
        if found is None:
            return output
        name = PureWindowsPath(found["path"].strip()).name  # the file's name alone: never a path we were given
        if self.tool_results is not None and name not in ("", ".", ".."):
            try:
                with open_regular(self.tool_results / name) as saved:
                    return _clean(saved.read(ERROR_CHARS * 4).decode("utf-8", "replace"))
            except OSError:
                pass  # deleted with its session (the archive keeps the transcript, not these)
        return _clean(found["preview"] or "")


def title_of(record: dict[str, Any]) -> tuple[int, str] | None:
    """A session title line: its rank (see ``TITLES``) and the title; else ``None``."""
    kind = record.get("type")
    if not isinstance(kind, str) or kind not in TITLES:  # any JSON may stand there: a list is unhashable
        return None
    rank, name = TITLES[kind]
    title = record.get(name)
    if not isinstance(title, str) or not title.strip():
        return None
    return rank, " ".join(title.split())[:TITLE_CHARS]


def prompt_digest(text: str) -> str:
    """What identifies a prompt across Claude Code's records of it: the
    transcript's user text and ``history.jsonl``'s ``display`` (pasted text
    put back, :mod:`selfreflect.history`). A slash command counts as typed
    (``/review the auth bug``, not its ``<command-name>`` markup), a bash-mode
    line as ``!ls``; the first ``PROMPT_CHARS`` characters, whitespace
    collapsed, any case. ``""`` for no words."""
    command = _COMMAND.search(text)
    if command:
        args = _COMMAND_ARGS.search(text)
        text = f"{command[1]} {args[1] if args else ''}"
    elif bash := _BASH_INPUT.match(text.strip()):
        text = "!" + bash[1]
    flat = " ".join(text.split()).casefold()[:PROMPT_CHARS]
    return hashlib.sha1(flat.encode("utf-8", "replace")).hexdigest()[:20] if flat else ""


def prompt_key(project_path: str, digest: str) -> str:
    """One prompt (:func:`prompt_digest`) in one project: a conversation
    chunk and a ``history.jsonl`` entry with the same key are the same prompt."""
    if not digest:
        return ""
    return hashlib.sha1(f"{project_path}\n{digest}".encode("utf-8", "replace")).hexdigest()[:20]


def describe_tool_use(name: str, tool_input: Any) -> tuple[str, tuple[str, ...]]:
    """A short line for a tool call: its name and key inputs, and the files it touches."""
    args = tool_input if isinstance(tool_input, dict) else {}
    files = tuple(v for k in ("file_path", "notebook_path", "path") if isinstance(v := args.get(k), str) and v)

    def arg(key: str, limit: int = INPUT_CHARS) -> str:
        value = args.get(key)
        return value[:limit] if isinstance(value, str) else ""

    if name == "Bash":
        text = " ".join(filter(None, [arg("description"), "$ " + arg("command", 1000)]))
    elif name in ("Read", "Write", "NotebookEdit", "MultiEdit"):
        text = arg("file_path") or arg("notebook_path")
    elif name == "Edit":
        text = f"{arg('file_path')}\n{arg('new_string', 200)}"
    elif name in ("Grep", "Glob"):
        text = " ".join(filter(None, [arg("pattern"), arg("path") and "in " + arg("path")]))
    elif name in ("Task", "Agent"):
        text = " ".join(filter(None, [arg("subagent_type"), arg("description"), arg("prompt")]))
    elif name == "WebSearch":
        text = arg("query")
    elif name == "WebFetch":
        text = " ".join(filter(None, [arg("url"), arg("prompt")]))
    elif name == "TodoWrite":
        todos = _as_blocks(args.get("todos"))
        text = "; ".join(str(t.get("content", "")) for t in todos if isinstance(t, dict))[:INPUT_CHARS]
    else:
        text = " ".join(f"{k}={v if isinstance(v, str) else v!r}"[:INPUT_CHARS] for k, v in args.items())[
            : INPUT_CHARS * 2
        ]
    return _clean(text), files


def _append(parts: list[Part], part: Part) -> None:
    """Merge the blocks of one streamed reply (same message id, same role)."""
    last = parts[-1] if parts else None
    if (
        last is not None
        and part.message_id is not None
        and last.message_id == part.message_id
        and last.role == part.role
        and part.role in ("assistant", "thinking")
    ):
        last.text = (last.text + "\n" + part.text)[:PART_CHARS]
        last.line_end = max(last.line_end, part.line_end)
        return
    parts.append(part)


def _as_blocks(content: Any) -> list[Any]:
    """Message or tool-result content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _join_text(blocks: list[Any]) -> str:
    return "\n".join(
        b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _clean(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    text = _REMINDER.sub("", text)
    text = _BLANKS.sub("\n\n", text).strip()
    return text[:PART_CHARS]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
