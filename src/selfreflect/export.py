"""Export: the conversations of a Claude.ai / Claude Desktop account export.

Settings → Privacy → Export data gives a ZIP holding ``conversations.json``,
``projects.json`` and ``users.json`` (``reference/claude-code-transcripts.md``
§10). ``conversations.json`` is one JSON array, easily hundreds of MB, so it
is read as a stream (ijson): one conversation at a time is held, never the
file, and from a ZIP the member is decompressed as it is read. Each
conversation::

    {"uuid", "name", "created_at", "updated_at", "account": {"uuid"},
     "chat_messages": [{"uuid", "text", "content": [{"type": "text" | "tool_use"
        | "tool_result" | "thinking", ...}], "sender": "human" | "assistant",
        "created_at", "parent_message_uuid"?, "attachments": [{"file_name",
        "extracted_content", ...}], "files": [{"file_name"}]}],
     "project": {"uuid", "name"}? | "project_uuid"?}

Branches: editing a prompt or retrying a reply starts a branch; messages
then name their ``parent_message_uuid`` (a root names none, or one that is
not there). The messages are put in tree order (depth first, siblings
oldest first), so the conversation as the user last saw it and each
abandoned branch are all there, a message shared by several branches only
once; an exchange is a human message and the replies that follow it in that
order. Without parents, the array's order is the conversation's.

Messages become the parts of :class:`~selfreflect.assemble.Exchange` objects,
so they are chunked and redacted like transcripts. A message is cited by its
number in that order: ``<export>:<conversation uuid>:<first>-<last>``.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import ijson

from selfreflect.assemble import ERROR_CHARS, PART_CHARS, RESULT_CHARS, Exchange, Part, describe_tool_use
from selfreflect.errors import SelfReflectError

CONVERSATIONS = "conversations.json"
PROJECTS = "projects.json"
SOURCE = "claude.ai"  # the project of a conversation in no project; the id namespace of every export point
ATTACHMENT_CHARS = 1000  # head of an attached file's extracted text: the rest is a file dump
_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_REFERENCE = re.compile(rf"^(?P<file>.+\.(?:json|zip)):(?P<conversation>{_UUID})(?::(?P<message>{_UUID}))?$", re.I)


class ExportError(SelfReflectError):
    """The file is not a Claude.ai export we can read."""


@dataclass
class Message:
    """One message, in conversation order (``number`` counts from 1)."""

    number: int
    uuid: str
    sender: str
    timestamp: str | None
    parts: list[Part]


@dataclass
class Conversation:
    """One conversation of the export, its messages in tree order."""

    uuid: str
    name: str
    project: str  # the project's name in claude.ai ("": none)
    created: str | None
    messages: list[Message] = field(default_factory=list)

    @property
    def project_path(self) -> str:
        """How the index names its project: ``claude.ai`` or ``claude.ai/<project>``."""
        return f"{SOURCE}/{self.project}" if self.project else SOURCE

    def exchanges(self) -> list[Exchange]:
        """Its exchanges: a human message and the replies that follow it (the
        first also carries the conversation's name)."""
        found: list[Exchange] = []
        for message in self.messages:
            if not found or message.sender == "human":
                found.append(
                    Exchange(
                        key=message.uuid,
                        start_offset=0,
                        start_line=message.number,
                        session_id=self.uuid,
                        cwd="",
                        git_branch="",
                        timestamp=message.timestamp or self.created or "",
                        sidechain=False,
                        agent_id=None,
                    )
                )
                if len(found) == 1 and self.name:
                    found[0].parts.append(Part("title", self.name, message.number, message.number))
            found[-1].parts += message.parts
        return [e for e in found if e.parts]


class Export:
    """A Claude.ai export on disk: ``conversations.json``, or the ZIP holding it.

    Use as a context manager; :meth:`conversations` streams them.

    Raises:
        ExportError: no such file, a ZIP without ``conversations.json``, not JSON.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0  # bytes of conversations.json (uncompressed)
        self._stack = ExitStack()
        self._stream: IO[bytes] | None = None
        self._projects: dict[str, str] = {}

    def __enter__(self) -> Export:
        try:
            if zipfile.is_zipfile(self.path):
                archive = self._stack.enter_context(zipfile.ZipFile(self.path))
                member = _member(archive, CONVERSATIONS)
                if member is None:
                    raise ExportError(f"{self.path} holds no {CONVERSATIONS}: is it a Claude.ai export?")
                self.size = member.file_size
                projects = _member(archive, PROJECTS)
                if projects is not None:
                    with archive.open(projects) as handle:
                        self._projects = _project_names(handle)
                self._stream = self._stack.enter_context(archive.open(member))
            else:
                self.size = self.path.stat().st_size
                sibling = self.path.with_name(PROJECTS)
                if sibling.is_file():
                    with open(sibling, "rb") as handle:
                        self._projects = _project_names(handle)
                self._stream = self._stack.enter_context(open(self.path, "rb"))
        except (OSError, zipfile.BadZipFile) as exc:
            self._stack.close()
            raise ExportError(f"cannot read the export {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    @property
    def bytes_read(self) -> int:
        """How far into ``conversations.json`` the reading is."""
        return self._stream.tell() if self._stream is not None else 0

    def conversations(self) -> Iterator[Conversation]:
        """Every conversation with a uuid, in file order, one at a time.

        Raises:
            ExportError: the file is not a JSON array of conversations.
        """
        assert self._stream is not None, "use the export as a context manager"
        items = found = 0
        try:
            for raw in ijson.items(self._stream, "item", use_float=True):
                items += 1
                if isinstance(raw, dict) and isinstance(raw.get("uuid"), str) and raw["uuid"]:
                    found += 1
                    yield conversation(raw, self._projects)
        except ijson.JSONError as exc:
            raise ExportError(f"{self.path}: not a Claude.ai export ({exc})") from exc
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise ExportError(f"cannot read the export {self.path}: {exc}") from exc
        if items and not found:  # another service's export (ChatGPT's is a conversations.json too)
            raise ExportError(f"{self.path}: not a Claude.ai export (none of its {items} items has a uuid)")

    def find(self, uuid: str) -> Conversation | None:
        """The conversation ``uuid`` (read up to it)."""
        for found in self.conversations():
            if found.uuid == uuid:
                return found
        return None


def conversation(raw: dict[str, Any], projects: dict[str, str]) -> Conversation:
    """A conversation of the export, its messages ordered and turned into parts."""
    project = raw.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    if not isinstance(name, str) or not name.strip():
        name = projects.get(str(raw.get("project_uuid") or (project or {}).get("uuid") or ""), "")
    found = Conversation(
        uuid=str(raw["uuid"]),
        name=_text(raw.get("name")),
        project=" ".join(name.replace("/", "-").replace("\\", "-").split()),
        created=_instant(raw.get("created_at")),
    )
    messages = raw.get("chat_messages")
    for number, message in enumerate(ordered(messages if isinstance(messages, list) else []), start=1):
        sender = "assistant" if message.get("sender") == "assistant" else "human"
        uuid = str(message["uuid"]) if isinstance(message.get("uuid"), str) else f"{found.uuid}-{number}"
        parts = message_parts(message, sender, number)
        found.messages.append(Message(number, uuid, sender, _instant(message.get("created_at")), parts))
    return found


def ordered(messages: list[Any]) -> list[dict[str, Any]]:
    """The messages in tree order: depth first from each root, siblings by
    time (then file order). Without parent links, as given."""
    items = [m for m in messages if isinstance(m, dict)]
    keys = [m["uuid"] if isinstance(m.get("uuid"), str) else f"#{i}" for i, m in enumerate(items)]
    index = {k: i for i, k in enumerate(keys)}
    if not any(isinstance(m.get("parent_message_uuid"), str) for m in items):
        return items
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i, m in enumerate(items):
        named = m.get("parent_message_uuid")  # any JSON may stand there: only a string names a parent
        parent = index.get(named) if isinstance(named, str) else None
        if parent is None or parent == i:
            roots.append(i)
        else:
            children.setdefault(parent, []).append(i)

    def when(i: int) -> tuple[str, int]:
        return str(items[i].get("created_at") or ""), i

    out: list[int] = []
    seen: set[int] = set()
    for root in sorted(roots, key=when) + list(range(len(items))):  # then what a cycle left out
        stack = [root]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            out.append(i)
            stack += sorted(children.get(i, []), key=when, reverse=True)
    return [items[i] for i in out]


def message_parts(message: dict[str, Any], sender: str, number: int) -> list[Part]:
    """The parts one message contributes: its words, thinking, tool calls and
    results, and the files attached to it."""
    parts: list[Part] = []
    blocks = message.get("content")
    if not isinstance(blocks, list) or not blocks:  # older exports: the text alone
        blocks = [{"type": "text", "text": message.get("text")}]
    tools: dict[str, str] = {}
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and (text := _text(block.get("text"))):
            parts.append(Part("user" if sender == "human" else "assistant", text, number, number))
        elif kind == "thinking" and (text := _text(block.get("thinking"))):
            parts.append(Part("thinking", text, number, number))
        elif kind == "tool_use":
            name = _text(block.get("name")) or "tool"
            tools[str(block.get("id") or "")] = name
            text, files = describe_tool_use(name, block.get("input"))
            parts.append(Part("tool", text, number, number, tool=name, files=files))
        elif kind == "tool_result":
            name = _text(block.get("name")) or tools.get(str(block.get("tool_use_id") or ""), "tool")
            output = _content_text(block.get("content"))
            if block.get("is_error"):
                parts.append(Part("error", output[:ERROR_CHARS], number, number, tool=name))
            elif output:
                parts.append(Part("result", output[:RESULT_CHARS], number, number, tool=name))
    for attached in message.get("attachments") or []:
        if isinstance(attached, dict):
            name = _text(attached.get("file_name")) or "a file"
            head = _text(attached.get("extracted_content"))[:ATTACHMENT_CHARS]
            parts.append(Part("attachment", f"{name}\n{head}".strip(), number, number, files=(name,)))
    names = [n for f in message.get("files") or [] if isinstance(f, dict) and (n := _text(f.get("file_name")))]
    if names:
        parts.append(Part("attachment", ", ".join(names), number, number, files=tuple(names)))
    return parts


def export_reference(text: str) -> tuple[Path, str, str | None] | None:
    """``(export file, conversation uuid, message uuid or None)`` when
    ``text`` cites an export conversation (``<file>:<uuid>[:<message uuid>]``)."""
    found = _REFERENCE.match(text.strip())
    if found is None:
        return None
    return Path(found["file"]), found["conversation"], found["message"]


def _member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    """The archive's ``name``, at its top or in one folder (the export's own)."""
    found = [i for i in archive.infolist() if not i.is_dir() and Path(i.filename).name == name]
    return min(found, key=lambda i: i.filename.count("/")) if found else None


def _project_names(handle: IO[bytes]) -> dict[str, str]:
    """``projects.json``'s uuid -> name, read as a stream (a project holds its
    documents: it can be big)."""
    names: dict[str, str] = {}
    uuid = name = None
    try:
        for prefix, event, value in ijson.parse(handle):
            if prefix == "item.uuid" and event == "string":
                uuid = value
            elif prefix == "item.name" and event == "string":
                name = value
            elif prefix == "item" and event == "end_map":
                if uuid and name:
                    names[uuid] = name
                uuid = name = None
    except ijson.JSONError:
        pass  # projects only name things: without them, conversations are "claude.ai"'s
    return names


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return _text(content)
    if isinstance(content, list):
        return _text("\n".join(str(b.get("text")) for b in content if isinstance(b, dict) and b.get("text")))
    return ""


def _text(value: Any) -> str:
    return value.strip()[:PART_CHARS] if isinstance(value, str) else ""


def _instant(value: Any) -> str | None:
    """An export time (``2024-03-01T10:00:00.123456+00:00``, ``...Z``) as UTC ISO 8601 with ms."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
