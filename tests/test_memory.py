"""Giving memory back: the embedder's working memory, library code pages.

Each test measures a fresh Python process, so that nothing else this test
session loaded is counted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self; glibc")

MAPPINGS = """
def mappings(name):
    '''(perms, resident KB, anonymous KB) of each mapping of a file whose path contains name.'''
    out, current = [], None
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            current = [fields[1], 0, 0] if len(fields) >= 6 and name in fields[5] else None
            if current:
                out.append(current)
        elif current and fields[0] in ("Rss:", "Anonymous:"):
            current[1 if fields[0] == "Rss:" else 2] = int(fields[1])
    return out
"""


def run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MAPPINGS + code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_embedder_hands_back_its_working_memory_after_a_call() -> None:
    result = run(
        """
import json
from selfreflect.embed import OnnxEmbedder
from selfreflect.memory import malloc_trim
def anonymous_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon:"))
model = OnnxEmbedder()
model.embed(["warm up"])
malloc_trim()
before = anonymous_kb()
for _ in range(3):
    model.embed(["word " * 300])  # the model's whole window
malloc_trim()
print(json.dumps({"before": before, "after": anonymous_kb()}))
"""
    )
    # Without the arena giving back what it grew by, this is about +15 MB.
    assert result["after"] - result["before"] < 8 * 1024


def test_released_library_code_maps_back_on_use_and_relocated_pages_stay() -> None:
    result = run(
        """
import json
from selfreflect.embed import OnnxEmbedder
from selfreflect.memory import release_code_pages
model = OnnxEmbedder()
first = model.embed(["how did we fix the docker memory limit"]).tolist()
loaded = mappings("onnxruntime_pybind11_state")
released = release_code_pages()
after = mappings("onnxruntime_pybind11_state")
again = model.embed(["how did we fix the docker memory limit"]).tolist()
used = mappings("onnxruntime_pybind11_state")
released_again = release_code_pages()  # which mappings are clean: remembered from the first time
after_again = mappings("onnxruntime_pybind11_state")
print(json.dumps({"loaded": loaded, "released": released, "after": after, "same": first == again,
                  "used": used, "released_again": released_again, "after_again": after_again}))
"""
    )
    code = lambda maps: sum(rss for perms, rss, _ in maps if perms == "r-xp")  # noqa: E731
    assert code(result["loaded"]) > 5 * 1024  # start-up touched megabytes of onnxruntime's code
    assert result["released"] > 0
    # (its idle worker threads map a little back at once)
    assert code(result["after"]) < code(result["loaded"]) / 4
    # pages the loader wrote (relocations) are the process's own: kept
    relocated = [(perms, rss) for perms, rss, anonymous in result["loaded"] if anonymous]
    assert relocated
    assert [(perms, rss) for perms, rss, anonymous in result["after"] if anonymous] == relocated
    assert result["same"]  # and the library runs on, from the page cache
    # inference mapped some back; a second release, without reading smaps again, hands it back the same way
    assert code(result["used"]) > code(result["after"])
    assert result["released_again"] == result["released"]
    assert code(result["after_again"]) < code(result["used"])
    assert [(perms, rss) for perms, rss, anonymous in result["after_again"] if anonymous] == relocated
