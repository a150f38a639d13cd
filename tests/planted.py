"""Fake secrets of every format selfreflect masks, planted in transcripts.

Every value is random (seeded), shaped like the real thing, and fake. Each
format says how it is written into a conversation, the way people paste
such things: in a prompt, a command, a tool's output, a ``.env`` file.
"""

from __future__ import annotations

import base64
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"


@dataclass(frozen=True)
class Planted:
    format: str
    secret: str  # what must never be found again
    text: str  # how it appears in the conversation
    where: str  # prompt | command | output | thinking


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _pem(rng: random.Random, kind: str) -> str:
    body = base64.b64encode(rng.randbytes(1190)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {kind}PRIVATE KEY-----", *lines, f"-----END {kind}PRIVATE KEY-----"])


def _jwt(rng: random.Random) -> str:
    def part(payload: bytes) -> str:
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    head = part(b'{"alg":"HS256","typ":"JWT"}')
    body = part(('{"sub":"' + _r(rng, string.digits, 10) + '","name":"' + _r(rng, ALNUM, 12) + '"}').encode())
    return f"{head}.{body}.{part(rng.randbytes(32))}"


# format -> (make the secret, put it in a conversation)
FORMATS: dict[str, tuple[Callable[[random.Random], str], Callable[[str], tuple[str, str]]]] = {
    "anthropic-key": (
        lambda r: "sk-ant-api03-" + _r(r, ALNUM + "-_", 93) + "AA",
        lambda s: (f"my key is {s}, can you check why it fails?", "prompt"),
    ),
    "openai-key": (
        lambda r: "sk-proj-" + _r(r, ALNUM + "-_", 74),
        lambda s: (f"export OPENAI_API_KEY={s}", "command"),
    ),
    "aws-access-key-id": (
        lambda r: "AKIA" + _r(r, string.ascii_uppercase + "234567", 16),
        lambda s: (f"aws_access_key_id = {s}", "output"),
    ),
    "aws-secret-unlabelled": (
        lambda r: _r(r, B64, 40),
        lambda s: (f"the second value they gave me is {s} , does that look right?", "prompt"),
    ),
    "github-token": (
        lambda r: "ghp_" + _r(r, ALNUM, 36),
        lambda s: (f"git clone https://{s}@github.com/acme/app.git", "command"),
    ),
    "github-fine-grained": (
        lambda r: "github_pat_" + _r(r, ALNUM, 22) + "_" + _r(r, ALNUM, 59),
        lambda s: (f"gh auth login --with-token <<< {s}", "command"),
    ),
    "gitlab-token": (lambda r: "glpat-" + _r(r, ALNUM + "-_", 20), lambda s: (f"GITLAB_TOKEN: {s}", "output")),
    "slack-bot-token": (
        lambda r: f"xoxb-{_r(r, string.digits, 12)}-{_r(r, string.digits, 13)}-{_r(r, ALNUM, 24)}",
        lambda s: (f"the bot uses {s} to post", "prompt"),
    ),
    "slack-webhook": (
        lambda r: (
            f"https://hooks.slack.com/services/T{_r(r, string.ascii_uppercase + string.digits, 10)}/"
            f"B{_r(r, string.ascii_uppercase + string.digits, 10)}/{_r(r, ALNUM, 24)}"
        ),
        lambda s: (f'curl -X POST -d \'{{"text":"hi"}}\' {s}', "command"),
    ),
    "google-api-key": (lambda r: "AIza" + _r(r, ALNUM + "-_", 35), lambda s: (f"const key = '{s}';", "output")),
    "stripe-key": (lambda r: "sk_live_" + _r(r, ALNUM, 32), lambda s: (f"Stripe::api_key = '{s}'", "output")),
    "npm-token": (lambda r: "npm_" + _r(r, ALNUM, 36), lambda s: (f"//registry.npmjs.org/:_authToken={s}", "output")),
    "pypi-token": (
        lambda r: "pypi-AgEIcHlwaS5vcmc" + _r(r, ALNUM + "-_", 60),
        lambda s: (f"twine upload -u __token__ -p {s} dist/*", "command"),
    ),
    "huggingface-token": (
        lambda r: "hf_" + _r(r, string.ascii_letters, 34),
        lambda s: (f"huggingface-cli login --token {s}", "command"),
    ),
    "sendgrid-key": (
        lambda r: "SG." + _r(r, ALNUM + "-_", 22) + "." + _r(r, ALNUM + "-_", 43),
        lambda s: (f"SENDGRID_API_KEY={s}", "output"),
    ),
    "jwt": (_jwt, lambda s: (f"curl -H 'Cookie: session={s}' https://app.example.com/me", "command")),
    "rsa-private-key": (
        lambda r: _pem(r, "RSA "),
        lambda s: (f"here is the deploy key:\n{s}\nwhy is ssh refusing it?", "prompt"),
    ),
    "openssh-private-key": (
        lambda r: _pem(r, "OPENSSH "),
        lambda s: (f"cat ~/.ssh/id_ed25519\n{s}", "output"),
    ),
    "ec-private-key": (lambda r: _pem(r, "EC "), lambda s: (f"The key file holds:\n{s}", "thinking")),
    "url-password": (
        lambda r: _r(r, ALNUM, 18),
        lambda s: (f"DATABASE_URL=postgres://app:{s}@db.internal:5432/app", "output"),
    ),
    "mysqldump-password": (
        lambda r: _r(r, ALNUM, 14),
        lambda s: (f"mysqldump -u root -p{s} app > backup.sql", "command"),
    ),
    "password-flag": (
        lambda r: _r(r, ALNUM + "!#%", 16),
        lambda s: (f"psql-migrate --host db --password {s} up", "command"),
    ),
    "password-flag-equals": (
        lambda r: _r(r, ALNUM, 16),
        lambda s: (f"./deploy.sh --password={s} --env prod", "command"),
    ),
    "basic-auth": (
        lambda r: base64.b64encode(f"admin:{_r(r, ALNUM, 14)}".encode()).decode(),
        lambda s: (f"Authorization: Basic {s}", "output"),
    ),
    "bearer-token": (
        lambda r: _r(r, ALNUM, 40),
        lambda s: (f"curl -H 'Authorization: Bearer {s}' https://api.example.com", "command"),
    ),
    "dotenv-secret": (
        lambda r: _r(r, ALNUM, 24),
        lambda s: (f"cat .env\nNODE_ENV=production\nSESSION_SECRET={s}\nPORT=3000", "output"),
    ),
    "dotenv-password": (
        lambda r: _r(r, ALNUM, 12),
        lambda s: (f"cat .env\nDB_HOST=localhost\nDB_PASSWORD={s}\nDB_PORT=5432", "output"),
    ),
    # Formats nothing names: only the entropy check finds them.
    "unknown-provider-key": (
        lambda r: "zq" + _r(r, ALNUM, 38),
        lambda s: (f"the vendor sent {s} for the sandbox", "prompt"),
    ),
    "unknown-base64-secret": (
        lambda r: _r(r, B64, 44) + "==",
        lambda s: (f"signing value: {s}", "output"),
    ),
}


def plant(per_format: int, seed: int = 20261202) -> list[Planted]:
    """``per_format`` fake secrets of every format."""
    rng = random.Random(seed)
    out = []
    for name, (make, write) in FORMATS.items():
        for _ in range(per_format):
            secret = make(rng)
            text, where = write(secret)
            out.append(Planted(name, secret, text, where))
    return out


def transcript(planted: list[Planted], session: str = "5ec4e700-0000-4000-8000-00000000feed") -> list[dict]:
    """Records of one session holding every planted secret, each in its place:
    prompts, Bash commands and their output, thinking. Long prompts put a
    private key in the middle of enough text to span several chunks."""
    records: list[dict] = []
    filler = " ".join(f"we talked about the deployment pipeline and step {i} of the rollout" for i in range(60))

    def add(kind: str, content: object) -> None:
        n = len(records)
        records.append(
            {
                "type": kind,
                "uuid": f"00000000-0000-4000-8000-{n:012d}",
                "parentUuid": records[-1]["uuid"] if records else None,
                "sessionId": session,
                "cwd": "/home/dev/vault",
                "timestamp": f"2026-03-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
                "message": {"role": "user" if kind == "user" else "assistant", "content": content, "id": f"msg_{n}"},
            }
        )

    for i, item in enumerate(planted):
        if item.where == "prompt":
            text = f"{filler}\n{item.text}\n{filler}" if "PRIVATE KEY" in item.text else item.text
            add("user", text)
            add("assistant", [{"type": "text", "text": "Let me look at that."}])
        elif item.where == "thinking":
            add("user", "what does the key file hold?")
            add("assistant", [{"type": "thinking", "thinking": item.text, "signature": "x"}])
        else:
            tool = f"toolu_{i:024d}"
            command = item.text if item.where == "command" else "cat config"
            output = item.text if item.where == "output" else "done"
            add("user", f"run step {i} of the setup")
            add("assistant", [{"type": "tool_use", "id": tool, "name": "Bash", "input": {"command": command}}])
            add("user", [{"type": "tool_result", "tool_use_id": tool, "content": output}])
    return records


def fragments(item: Planted) -> list[str]:
    """What of a secret must not be found: the whole, and each line of a key block."""
    lines = [line for line in item.secret.splitlines() if len(line) >= 20 and "PRIVATE KEY" not in line]
    return [item.secret, *lines]


def found_in(planted: list[Planted], haystacks: dict[str, bytes]) -> dict[str, list[str]]:
    """format -> where (file, answer, log) any fragment of its secrets was found."""
    found: dict[str, list[str]] = {}
    # a store's files are mostly zeros (space set aside): no secret holds a NUL, so runs of them go
    texts = {where: re.sub(rb"\x00{16,}", b"\x00", data) for where, data in haystacks.items()}
    for item in planted:
        needles = [f.encode() for f in fragments(item)]
        for where, data in texts.items():
            if any(n in data for n in needles):
                found.setdefault(item.format, []).append(where)
    return found
