"""Redact: mask obvious secrets before anything is embedded or stored.

Conversations carry pasted keys, ``.env`` files and ``Authorization`` headers.
What matches is replaced by ``[REDACTED:<kind>]``; the surrounding text (the
variable name, the header) stays, so the conversation is still findable.
"""

from __future__ import annotations

import re

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private-key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
    ),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}")),
    ("openai-key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}")),
    ("aws-access-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}")),
    ("slack-token", re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b")),
    ("stripe-key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("url-credentials", re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)")),
]

# KEY=value, KEY: value, "key": "value" where the name says it is a secret.
_ASSIGNMENT = re.compile(
    r"""(?P<name>\b[A-Za-z0-9_.\-]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)[A-Za-z0-9_]*)"""
    r"""(?P<sep>["']?\s*[:=]\s*["']?)(?P<value>[^\s"',;]{8,})""",
    re.I,
)
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Token)\s+)(?P<value>[A-Za-z0-9_\-.=+/]{16,})")


def redact(text: str) -> str:
    """``text`` with every secret it visibly holds masked."""
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"[REDACTED:{kind}]", text)
    text = _BEARER.sub(lambda m: f"{m['head']}[REDACTED:token]", text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


# ``process.env.API_KEY``, ``this.config.apiKey``: code that reads a secret, not one.
_REFERENCE = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+$")


def _mask_assignment(match: re.Match[str]) -> str:
    value = match["value"]
    if (
        value.startswith(("[REDACTED", "$", "<"))  # already masked, or $TOKEN / <token>
        or "(" in value  # os.getenv('TOKEN'), getpass.getpass()
        or "[" in value  # os.environ["TOKEN"]
        or _REFERENCE.match(value)
    ):
        return match[0]
    return f"{match['name']}{match['sep']}[REDACTED:secret]"
