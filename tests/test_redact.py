"""redact.redact: secrets are masked, their names stay, ordinary text is untouched.

Every secret here is built in the test from obviously fake parts.
"""

from __future__ import annotations

import pytest

from selfreflect.redact import redact

ANTHROPIC_KEY = "sk-ant-api03-" + "a" * 40
OPENAI_KEY = "sk-" + "b1" * 20
OPENAI_PROJECT_KEY = "sk-proj-" + "c2" * 24
AWS_KEY = "AKIA" + "FAKE" * 4
GITHUB_TOKEN = "ghp_" + "d3" * 18
JWT = "eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "." + "s1gnatureS1gnature_-x"
BEARER = "e4" * 16
PEM = "\n".join(
    ["-----BEGIN RSA PRIVATE KEY-----", "MIIEow" + "A" * 58, "B" * 64, "C" * 20, "-----END RSA PRIVATE KEY-----"]
)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"export ANTHROPIC_API_KEY={ANTHROPIC_KEY}", ANTHROPIC_KEY, "export ANTHROPIC_API_KEY="),
        (f"my key is {ANTHROPIC_KEY} please", ANTHROPIC_KEY, "my key is "),
        (f"client = OpenAI(api_key='{OPENAI_KEY}')", OPENAI_KEY, "client = OpenAI(api_key="),
        (f"use {OPENAI_PROJECT_KEY} for the project", OPENAI_PROJECT_KEY, " for the project"),
        (f"aws_access_key_id = {AWS_KEY}", AWS_KEY, "aws_access_key_id"),
        (f"the AWS key {AWS_KEY} leaked", AWS_KEY, "the AWS key "),
        (f"git clone https://{GITHUB_TOKEN}@github.com/o/r.git", GITHUB_TOKEN, "@github.com/o/r.git"),
        (f"token {GITHUB_TOKEN}", GITHUB_TOKEN, "token"),
        (f"cookie: session={JWT}; Path=/", JWT, "cookie: session="),
        (f"Authorization: Bearer {BEARER}", BEARER, "Authorization: Bearer "),
        ("DATABASE_PASSWORD=hunter2hunter2", "hunter2hunter2", "DATABASE_PASSWORD="),
        ('{"api_key": "abcd1234efgh5678"}', "abcd1234efgh5678", '"api_key"'),
        ("STRIPE_SECRET: s3cr3tv4lu3", "s3cr3tv4lu3", "STRIPE_SECRET"),
        ("postgres://user:pass@host:5432/app", "user:pass", "postgres://"),
        ("mysql://root:s3cr3t@localhost/db", "root:s3cr3t", "@localhost/db"),
    ],
)
def test_secret_is_masked_and_its_name_stays(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "[REDACTED" in out
    assert kept in out


def test_private_key_block_is_masked_whole() -> None:
    text = f"Here is the deploy key:\n{PEM}\nkeep it safe"
    out = redact(text)
    assert out.startswith("Here is the deploy key:\n")
    assert out.endswith("\nkeep it safe")
    assert "MIIEow" not in out and "B" * 64 not in out and "C" * 20 not in out
    assert "[REDACTED" in out


def test_private_key_cut_off_before_its_end_line_is_masked() -> None:
    out = redact("pasted half a key:\n" + PEM.split("-----END")[0])
    assert "MIIEow" not in out and "B" * 64 not in out


def test_every_secret_in_one_env_file_is_masked() -> None:
    env_file = "\n".join(
        [
            "# local settings",
            "DEBUG=true",
            "PORT=8080",
            "DATABASE_PASSWORD=hunter2hunter2",
            f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}",
            f"GITHUB_TOKEN={GITHUB_TOKEN}",
            "DATABASE_URL=postgres://app:pa55word@db:5432/app",
        ]
    )
    out = redact(env_file).splitlines()
    assert out[:3] == ["# local settings", "DEBUG=true", "PORT=8080"]
    for line, name in zip(
        out[3:], ["DATABASE_PASSWORD=", "ANTHROPIC_API_KEY=", "GITHUB_TOKEN=", "DATABASE_URL="], strict=True
    ):
        assert line.startswith(name) and "[REDACTED" in line
    for secret in ("hunter2hunter2", ANTHROPIC_KEY, GITHUB_TOKEN, "pa55word"):
        assert secret not in "\n".join(out)


@pytest.mark.parametrize(
    "text",
    [
        "The secret to good tests is real inputs; the token budget is 254 word-pieces.",
        "Password reset emails should expire after an hour.",
        "def count(texts: list[str]) -> int:\n    return sum(len(t.split()) for t in texts)\n",
        "for (let i = 0; i < items.length; i++) { total += items[i].price; }",
        "see /home/user/project/src/selfreflect/tail.py:42 and C:\\Users\\dev\\risk-assessment.md",
        "session 0bdd2740-b6f7-4e7b-b1c9-f159cc83b104 started",
        "fixed in commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 (3f2a9c1)",
        "https://github.com/oneryalcin/fasthooks/blob/main/README.md",
        "export SECRET_KEY=$SECRET_KEY",
        "pip install scikit-learn sk-video",
        "max_tokens = 256",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "code",
    [
        # from obra__episodic-memory__long-conversation.jsonl line 246
        "const apiKey = process.env.ANTHROPIC_API_KEY || process.env.OPENAI_API_KEY;",
        # from obra__episodic-memory__large-conversation.jsonl line 143
        "      apiKey: this.config.apiKey,",
        'api_key = os.environ["OPENAI_API_KEY"]',
        "token = os.getenv('GITHUB_TOKEN')",
    ],
)
def test_code_that_reads_a_secret_from_elsewhere_is_unchanged(code: str) -> None:
    # A reference to a secret is not a secret (the module already spares $TOKEN).
    assert redact(code) == code


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact(f"DATABASE_PASSWORD=hunter2hunter2 and {ANTHROPIC_KEY}")
    assert redact(once) == once
