"""Redact: mask secrets before anything is embedded, stored or shown.

Conversations carry pasted keys, ``.env`` files, ``Authorization`` headers and
passwords on command lines. What matches is replaced by
``[REDACTED:<kind>]``; the surrounding text (the variable name, the header,
the command) stays, so the conversation is still findable.

Three layers, applied in this order to whole texts (a record's text before
it is cut into chunks, so a key block that spans chunks is masked whole):

1. ``<private>...</private>``: what a user marks private never leaves the
   record (an unclosed marker hides the rest of the text).
2. Our own rules for what is common in a developer's terminal: private key
   blocks, provider keys, URL credentials, ``Authorization`` headers
   (Bearer and Basic), password flags (``mysqldump -p...``,
   ``--password ...``), ``NAME=value`` where the name says secret.
3. The gitleaks default rule set (222 rules, vendored as data in
   ``rules/gitleaks.toml``): each is tried only when one of its keywords is
   in the text, with its entropy threshold and allowlists.
4. Unlabelled keys: a token of 32+ characters mixing at least two of upper
   case, lower case and digits, with a Shannon entropy over 4.0 bits a
   character, is masked as ``high-entropy``. Measured on random keys: 99.9 %
   of 32-character base62 keys are over 4.08, 40-character ones over 4.34;
   hex digests and uuids cannot pass 4.0 (16 symbols). Kept: paths and names
   (two or more word-like pieces between ``/ _ - .``) and pronounceable
   identifiers (30 %+ vowels and under 4.5 bits, where random keys rarely go).
"""

from __future__ import annotations

import functools
import math
import re
import sys
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MASK = "[REDACTED:{}]"

_PRIVATE = re.compile(r"<private>.*?(?:</private>|\Z)", re.S | re.I)

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.S,
        ),
    ),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}")),
    ("openai-key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}")),
    ("slack-token", re.compile(r"\bxox[abprse]-[A-Za-z0-9\-]{10,}")),
    ("slack-webhook", re.compile(r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_\-]{20,}")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("stripe-key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}")),
    ("npm-token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("pypi-token", re.compile(r"\bpypi-[A-Za-z0-9_\-]{50,}")),
    ("huggingface-token", re.compile(r"\bhf_[A-Za-z]{34}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("url-credentials", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
]

# Secrets known by what stands before them: the text before the value stays.
_LABELLED: list[tuple[str, re.Pattern[str]]] = [
    ("token", re.compile(r"(?P<head>\b(?:Bearer|Token)\s+)(?P<value>[A-Za-z0-9_\-.=+/~]{16,})")),
    ("basic-auth", re.compile(r"(?P<head>\bBasic\s+)(?P<value>[A-Za-z0-9+/]{8,}={0,2})")),
    # mysql -p<password> (no space: with a space -p only asks for one), mysqldump, mysqladmin
    (
        "password",
        re.compile(r"(?P<head>\bmysql(?:dump|admin|import|sh)?\b[^\n|;&]*?\s-p)(?P<value>[^\s'\"-][^\s'\"]{2,})"),
    ),
    # --password SECRET, --password=SECRET, --passwd, --pass, -P for sshpass
    (
        "password",
        re.compile(
            r"(?P<head>(?:--(?:password|passwd|pass|db-password|secret|token|api-key)|\bsshpass\s+-p)[ =]['\"]?)"
            r"(?P<value>[^\s'\"$<-][^\s'\"]{2,})",
            re.I,
        ),
    ),
    ("password", re.compile(r"(?P<head>\bPGPASSWORD=['\"]?)(?P<value>[^\s'\"]{3,})")),
]

# KEY=value, KEY: value, "key": "value" where the name says it is a secret.
_ASSIGNMENT = re.compile(
    r"""(?P<name>\b[A-Za-z0-9_.\-]*(?:SECRET|TOKEN|PASSWORD|PASSWD|PWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?|AUTH_?KEY|SIGNING_?KEY|CLIENT_?SECRET)[A-Za-z0-9_]*)"""
    r"""(?P<sep>["']?\s*[:=]\s*["']?)(?P<value>[^\s"',;]{8,})""",
    re.I,
)

# ``process.env.API_KEY``, ``this.config.apiKey``: code that reads a secret, not one.
_REFERENCE = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+$")

_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9+/_\-])")
ENTROPY_BITS = 4.0


def redact(text: str) -> str:
    """``text`` with every secret it visibly holds masked."""
    if not text:
        return text
    text = _PRIVATE.sub("[PRIVATE]", text)
    for kind, pattern in _PATTERNS:
        text = pattern.sub(MASK.format(kind), text)
    for kind, pattern in _LABELLED:
        text = pattern.sub(lambda m, k=kind: m["head"] + MASK.format(k), text)  # type: ignore[misc]
    text = _ASSIGNMENT.sub(_mask_assignment, text)
    text = _rules().apply(text)
    return _TOKEN.sub(_mask_high_entropy, text)


@functools.lru_cache(maxsize=512)
def redact_part(text: str) -> str:
    """:func:`redact`, remembered: an exchange still being written is cut into
    chunks again at every batch, its earlier parts unchanged."""
    return redact(text)


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _mask_assignment(match: re.Match[str]) -> str:
    value = match["value"]
    if (
        value.startswith(("[REDACTED", "[PRIVATE", "$", "<", "%", "{{"))  # masked, or $TOKEN / <token> / templates
        or "(" in value  # os.getenv('TOKEN'), getpass.getpass()
        or "[" in value  # os.environ["TOKEN"]
        or _REFERENCE.match(value)
        or value.lower() in ("true", "false", "null", "none", "undefined", "required", "optional")
    ):
        return match[0]
    return f"{match['name']}{match['sep']}{MASK.format('secret')}"


_WORDISH = re.compile(r"^(?:[a-z]{3,}|[A-Z][a-z]{3,}|\d{4})$")  # a word, a Name, a year: a path or a name


def _mask_high_entropy(match: re.Match[str]) -> str:
    token = match[0]
    upper, lower, digit = (
        any(c.isupper() for c in token),
        any(c.islower() for c in token),
        any(c.isdigit() for c in token),
    )
    entropy = shannon_entropy(token)
    if upper + lower + digit < 2 or entropy <= ENTROPY_BITS:
        return token
    if entropy < 4.5 and sum(c in "aeiouAEIOU" for c in token) >= 0.3 * len(token):
        return token  # pronounceable and not that random: an identifier (getUserAccountFromDatabaseById)
    if sum(1 for piece in re.split(r"[/_\-.]", token) if _WORDISH.match(piece)) >= 2:
        return token  # npm/_logs/2025-09-03T00_52_28_123Z-debug-0, some_Module/Name2: a path or a name
    return MASK.format("high-entropy")


# -- the vendored gitleaks rules ------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    id: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...]
    entropy: float
    group: int
    allow: tuple[re.Pattern[str], ...]
    stopwords: tuple[str, ...]


class _RuleSet:
    def __init__(self, rules: list[_Rule], allow: tuple[re.Pattern[str], ...], stopwords: tuple[str, ...]) -> None:
        self.rules = rules
        self.allow = allow
        self.stopwords = stopwords

    def apply(self, text: str) -> str:
        lowered = text.lower()
        spans: list[tuple[int, int, str]] = []
        for rule in self.rules:
            if rule.keywords and not any(k in lowered for k in rule.keywords):
                continue
            for match in rule.pattern.finditer(text):
                group = rule.group if rule.group <= (rule.pattern.groups or 0) else 0
                if group == 0 and rule.pattern.groups:
                    group = 1
                secret = match[group]
                if not secret or secret.startswith(("[REDACTED", "[PRIVATE")) or "REDACTED:" in secret:
                    continue
                if rule.entropy and shannon_entropy(secret) < rule.entropy:
                    continue
                if self._allowed(secret, rule):
                    continue
                spans.append((match.start(group), match.end(group), rule.id))
        if not spans:
            return text
        out, last = [], 0
        for start, end, kind in sorted(spans):
            if start < last:
                continue  # inside a span already masked
            out += [text[last:start], MASK.format(kind)]
            last = end
        return "".join(out) + text[last:]

    def _allowed(self, secret: str, rule: _Rule) -> bool:
        lowered = secret.lower()
        if any(p.search(secret) for p in self.allow + rule.allow):
            return True
        return any(word in lowered for word in self.stopwords + rule.stopwords)


_LOADED: list[_RuleSet] = []
_LOCK = threading.Lock()


def _rules() -> _RuleSet:
    """The gitleaks rules, read and compiled once, on first use."""
    with _LOCK:
        if not _LOADED:
            source = resources.files("selfreflect") / "rules" / "gitleaks.toml"
            _LOADED.append(_load(tomllib.loads(source.read_text(encoding="utf-8"))))
        return _LOADED[0]


def _load(config: dict[str, Any]) -> _RuleSet:
    rules = []
    for raw in config.get("rules", []):
        if "regex" not in raw or raw.get("path"):
            continue  # rules on file paths do not apply to conversation text
        pattern = _compile(raw["regex"])
        if pattern is None:
            continue
        allow: list[re.Pattern[str]] = []
        stopwords: list[str] = []
        for allowlist in raw.get("allowlists", []):
            if allowlist.get("regexTarget", "secret") == "secret":
                allow += [p for p in map(_compile, allowlist.get("regexes", [])) if p is not None]
            stopwords += [w.lower() for w in allowlist.get("stopwords", [])]
        rules.append(
            _Rule(
                raw["id"],
                pattern,
                tuple(k.lower() for k in raw.get("keywords", [])),
                float(raw.get("entropy", 0.0)),
                int(raw.get("secretGroup", 0)),
                tuple(allow),
                tuple(stopwords),
            )
        )
    top = config.get("allowlist", {})
    everywhere = tuple(p for p in map(_compile, top.get("regexes", [])) if p is not None)
    return _RuleSet(rules, everywhere, tuple(w.lower() for w in top.get("stopwords", [])))


def _compile(expression: str) -> re.Pattern[str] | None:
    """A gitleaks (Go RE2) expression as a Python pattern, or ``None``."""
    try:
        with warnings.catch_warnings():  # "possible nested set": RE2 syntax that Python reads the same today
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(_from_re2(expression))
    except re.error:
        return None


def _from_re2(expression: str) -> str:
    """RE2 lets ``(?i)`` stand anywhere and apply to the rest of its group;
    Python wants flags at the start, or scoped as ``(?i:...)``. ``\\z`` is ``\\Z``."""
    expression = expression.replace(r"\z", r"\Z")
    while True:
        at = _flag_in_the_middle(expression)
        if at < 0:
            return expression
        flags = expression[at + 2 : expression.index(")", at)]
        end = _group_end(expression, at)
        expression = expression[:at] + f"(?{flags}:" + expression[at + len(flags) + 3 : end] + ")" + expression[end:]


def _flag_in_the_middle(expression: str) -> int:
    for match in re.finditer(r"\(\?[imsx]+\)", expression):
        start = match.start()
        if start > 0 and expression[start - 1] != "\\":
            return start
    return -1


def _group_end(expression: str, start: int) -> int:
    """Index of the ``)`` closing the group that holds ``start`` (or the end)."""
    depth, i, in_class = 0, start, False
    while i < len(expression):
        char = expression[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return len(expression)
