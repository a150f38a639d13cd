"""Search over the real corpus: by meaning, by identifier, with filters."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import ConfigError
from selfreflect.importer import Importer
from selfreflect.lexical import lexical_text
from selfreflect.projects import ProjectNotFound
from selfreflect.query import SearchRequest
from selfreflect.search import WINDOWS, Decay, SearchQuery, fuse, parse_when, search, snippet, snippets
from selfreflect.state import State
from selfreflect.store import FusionPlan, Hit, RawPoint, SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.windows import FIELD, flatten, tiles

from conftest import REAL, Corpus, make_settings, write_session


def hits(
    store: EdgeStore, embedder: OnnxEmbedder, text: str, limit: int = 5, **where: object
) -> list[tuple[str, int, int]]:
    response = search(store, embedder, SearchQuery(text, SearchFilter(**where), limit))  # type: ignore[arg-type]
    return [(Path(r.transcript).name, r.line_start, r.line_end) for r in response.results]


def found(results: list[tuple[str, int, int]], name: str, line: int) -> bool:
    """``name`` or one of its edge-case copies (``<case>__<name>``) holds ``line``."""
    return any(n.endswith(name) and start <= line <= end for n, start, end in results)


@pytest.mark.parametrize(
    ("query", "name", "line"),
    [
        # by meaning: few words in common with the transcript
        ("launch the web app's server as a background process", "marot__spotter__tool_heavy.jsonl", 4),
        (
            "why does the assistant keep asking permission before fixing obvious problems",
            "obra__episodic-memory__tiny-conversation.jsonl",
            2,
        ),
        # by exact identifier
        ("useSimpleTodos", "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl", 40),
        ("to_relative_path", "agent-a2898e3.jsonl", 144),
    ],
)
def test_known_facts_are_found(
    corpus_store: EdgeStore, embedder: OnnxEmbedder, query: str, name: str, line: int
) -> None:
    assert found(hits(corpus_store, embedder, query), name, line)


def test_result_carries_a_full_citation(corpus: Corpus, corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    response = search(corpus_store, embedder, SearchQuery("ls -la", limit=3))
    top = response.results[0]
    assert Path(top.transcript).is_file() and top.transcript in {str(p) for p in corpus.files.values()}
    assert 1 <= top.line_start <= top.line_end
    assert top.session_id and top.project and top.timestamp
    assert top.snippet and len(top.snippet) <= 242
    assert response.took_ms > 0
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)


def test_project_filter_by_name_and_by_path(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    by_name = search(corpus_store, embedder, SearchQuery("tests", SearchFilter(projects=("spotter",)), 20)).results
    by_path = SearchQuery("tests", SearchFilter(projects=("/home/marco/projects/spotter",)), 20)
    assert by_name and {r.project for r in by_name} == {"spotter"}
    assert {(r.transcript, r.line_start) for r in by_name} == {
        (r.transcript, r.line_start) for r in search(corpus_store, embedder, by_path).results
    }


def test_since_session_and_file_filters(corpus: Corpus, corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    recent = search(
        corpus_store, embedder, SearchQuery("tests", SearchFilter(since="2026-01-01T00:00:00Z"), 50)
    ).results
    assert recent and all(r.timestamp >= "2026-01-01" for r in recent)
    session = "d6e0bada-1959-4eec-a9d2-0bfade768d8f"
    in_session = search(corpus_store, embedder, SearchQuery("command", SearchFilter(session_id=session), 50)).results
    assert in_session and {r.session_id for r in in_session} == {session}
    edited = search(corpus_store, embedder, SearchQuery("todo", SearchFilter(file="page.tsx"), 50)).results
    assert edited and all(any(f.endswith("page.tsx") for f in r.files) for r in edited)


def test_sidechains_can_be_left_out(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    everything = hits(corpus_store, embedder, "to_relative_path", limit=20)
    main_only = hits(corpus_store, embedder, "to_relative_path", limit=20, include_sidechains=False)
    assert any(n == "agent-a2898e3.jsonl" for n, _, _ in everything)
    assert all(n != "agent-a2898e3.jsonl" for n, _, _ in main_only)


def test_min_score_drops_results_under_that_relevance(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    all_results = search(corpus_store, embedder, SearchQuery("docker", limit=10)).results
    cut = sorted(r.relevance for r in all_results)[len(all_results) // 2]
    kept = search(corpus_store, embedder, SearchQuery("docker", limit=10, min_score=cut)).results
    assert kept and all(r.relevance >= cut for r in kept) and len(kept) < len(all_results)


def test_relevance_tells_a_match_from_the_best_of_nothing(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    """The fused score only ranks: the best of nothing scores like a match.
    Relevance does not."""
    from selfreflect.query import STRONG

    match = search(
        corpus_store,
        embedder,
        SearchQuery("why does the assistant keep asking permission before fixing obvious problems", limit=3),
    ).results
    assert match[0].relevance >= STRONG and 0 <= match[0].relevance <= 1
    for unrelated in ("abort listener memory leak in the websocket pool", "kubernetes helm chart ingress annotations"):
        nothing = search(corpus_store, embedder, SearchQuery(unrelated, SearchFilter(projects=("spotter",)), 5)).results
        assert nothing and nothing[0].relevance < STRONG, (unrelated, nothing[0].relevance)
        assert nothing[0].score > 0.016  # while its rank score looks like a match's


def test_parse_when() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    assert parse_when("7d", now) == "2026-03-03T12:00:00Z"
    assert parse_when("12h", now) == "2026-03-10T00:00:00Z"
    assert parse_when("2026-01-31", now) == "2026-01-31T00:00:00Z"
    assert parse_when("2026-01-31T10:00:00+02:00", now) == "2026-01-31T08:00:00Z"
    assert parse_when(None) is None
    with pytest.raises(ConfigError):
        parse_when("last tuesday", now)


def test_snippet_shows_the_part_that_matched() -> None:
    text = "intro " * 100 + "the docker memory limit was raised to 4g " + "outro " * 100
    shown = snippet(text, "docker memory limit")
    assert "docker memory limit" in shown and shown.startswith("…") and shown.endswith("…")
    assert snippet("short text", "x") == "short text"


def test_snippet_finds_the_part_that_means_the_question(embedder: OnnxEmbedder) -> None:
    """A question in other words shares no word with the text: the snippet is
    the window closest in meaning, not the start of the chunk."""
    WINDOWS.clear()

    def text(n: int) -> str:
        filler = f"We renamed the settings page {n} and moved its tabs around so the navigation reads better. " * 4
        point = "The container kept getting killed by the kernel, so we raised its RAM cap to four gigabytes."
        return filler + point + " " + filler

    question = "why did the service die from running out of memory"
    vector = embedder.embed([question])[0]
    texts = [text(n) for n in range(4)]
    by_meaning = snippets(texts, [question] * 4, [vector] * 4, embedder)
    assert "RAM cap" in by_meaning[0]
    assert "RAM cap" not in snippet(texts[0], question)  # words alone cannot place it
    # a bounded cost: past the token budget, the later results fall back to words
    assert by_meaning[-1] == snippet(texts[-1], question)
    # the words still win where they match
    assert "settings page" in snippets([texts[0]], ["settings page tabs navigation"], [vector], embedder)[0]


def test_windows_embedded_once_place_later_snippets_without_the_model(embedder: OnnxEmbedder) -> None:
    """The same chunk in a later search is placed from the windows' kept
    vectors: the model is not run again, the snippet is the same."""
    WINDOWS.clear()
    filler = "We renamed the settings page and moved its tabs around so the navigation reads better. " * 4
    text = filler + "The container kept getting killed by the kernel, so we raised its RAM cap to 4 GB. " + filler
    question = "why did the service die from running out of memory"
    vector = embedder.embed([question])[0]
    calls: list[int] = []

    class Counting:
        name, dim = embedder.name, embedder.dim

        def count_tokens(self, texts: list[str]) -> list[int]:
            return embedder.count_tokens(texts)

        def embed(self, texts: list[str]) -> object:
            calls.append(len(texts))
            return embedder.embed(texts)

    first = snippets([text], [question], [vector], Counting())  # type: ignore[arg-type]
    assert "RAM cap" in first[0]
    assert calls == [len(tiles(flatten(text)))]
    again = snippets([text], [question], [vector], Counting())  # type: ignore[arg-type]
    assert again == first and len(calls) == 1


class CountingEmbedder:
    """The real model, each call of it recorded (what, how many texts)."""

    def __init__(self, model: OnnxEmbedder) -> None:
        self.model, self.name, self.dim, self.calls = model, model.name, model.dim, []

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.model.count_tokens(texts)

    def embed(self, texts: list[str]) -> object:
        self.calls.append(("embed", len(texts)))
        return self.model.embed(texts)

    def embed_queries(self, texts: list[str]) -> object:
        self.calls.append(("embed_queries", len(texts)))
        return self.model.embed_queries(texts)


def test_a_chunk_imported_now_places_its_snippet_by_meaning_without_the_model(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    """The importer keeps the vectors of a chunk's windows, pooled from the
    model call that embedded it: a question in other words places the
    snippet with no model call but the query's, on the same window as
    embedding the windows did. The same chunk as a store written before
    holds it (no window vectors) is still placed by embedding its windows."""
    WINDOWS.clear()
    filler = "We renamed the settings page and moved its tabs around so the navigation reads better. " * 4
    text = filler + "The container kept getting killed by the kernel, so we raised its RAM cap to 4 GB. " + filler
    question = "why did the service die from running out of memory"
    settings = make_settings(tmp_path)
    (settings.projects_dir / "-home-me-app").mkdir(parents=True)
    write_session(settings.projects_dir / "-home-me-app", "abcd1111-0000-4000-8000-000000000001", text)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        (point,) = [p for p in store.scroll(SearchFilter(), 100) if "RAM cap" in p["text"]]
        assert point[FIELD]["starts"] == [start for start, _ in tiles(flatten(point["text"]))]
        counting = CountingEmbedder(embedder)
        now = search(store, counting, SearchQuery(question, limit=1)).results[0]  # type: ignore[arg-type]
        assert "RAM cap" in now.snippet and "RAM cap" not in snippet(now.text, question)
        assert counting.calls == [("embed_queries", 1)]
        vector = embedder.embed_queries([question])[0]
        assert now.snippet == snippets([now.text], [question], [vector], embedder)[0]  # windows embedded alone

        (raw,) = store.get([point["id"]])
        store.load([RawPoint(raw.id, raw.dense, raw.sparse, {k: v for k, v in raw.payload.items() if k != FIELD})])
        WINDOWS.clear()
        counting.calls.clear()
        before = search(store, counting, SearchQuery(question, limit=1)).results[0]  # type: ignore[arg-type]
        assert before.snippet == now.snippet
        assert counting.calls == [("embed_queries", 1), ("embed", len(tiles(flatten(now.text))))]


def test_window_vectors_stay_out_of_the_results(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    """The payload's window vectors are for placing snippets: no result, of
    a search or of a file's conversations, carries them."""
    from dataclasses import fields

    from selfreflect.query import SearchResult
    from selfreflect.search import by_file

    question = "why does the assistant keep asking permission before fixing obvious problems"
    answers = [search(corpus_store, embedder, SearchQuery(question, limit=10)), by_file(corpus_store, "page.tsx")]
    shown = {r.transcript for a in answers for r in a.results}
    assert any(FIELD in p for p in corpus_store.scroll(SearchFilter(), 100_000) if p["transcript"] in shown)
    for answer in answers:
        doc = answer.to_json()
        assert doc["results"] and all(set(r) == {f.name for f in fields(SearchResult)} for r in doc["results"])
        assert '"signs"' not in orjson.dumps(doc).decode()


def test_decay_formula() -> None:
    from selfreflect.search import Decay

    newest = datetime(2026, 3, 31, tzinfo=timezone.utc)
    decay = Decay(half_life_days=30, weight=0.3)
    assert decay.factor("2026-03-31T00:00:00Z", newest) == pytest.approx(1.0)
    assert decay.factor("2026-03-01T00:00:00Z", newest) == pytest.approx(0.7 + 0.3 * 0.5)  # one half-life
    assert decay.factor("2026-01-30T00:00:00Z", newest) == pytest.approx(0.7 + 0.3 * 0.25)  # two
    assert decay.factor("2026-04-10T00:00:00Z", newest) == pytest.approx(1.0)  # newer than newest: no bonus
    assert decay.factor(None, newest) == pytest.approx(0.7)  # no timestamp: the floor
    assert Decay(30, 0.0).factor("2020-01-01T00:00:00Z", newest) == 1.0  # weight 0: off


def test_decay_favours_recent_conversations(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    from selfreflect.search import Decay

    plain = search(corpus_store, embedder, SearchQuery("tests", limit=10)).results
    recent = search(corpus_store, embedder, SearchQuery("tests", limit=10, decay=Decay(7, 1.0))).results
    newest = max(r.timestamp or "" for r in plain + recent)
    assert recent[0].timestamp and recent[0].timestamp[:7] == newest[:7]  # the newest month leads
    assert [r.timestamp for r in recent] != [r.timestamp for r in plain]
    assert [r.score for r in recent] == sorted((r.score for r in recent), reverse=True)


def test_copies_of_an_exchange_collapse_into_one_result(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """A resumed or copied session holds the same records: one result, which
    says where the copies are."""
    settings = make_settings(tmp_path)
    folder = settings.projects_dir / "-p"
    folder.mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", folder / name)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        results = search(store, embedder, SearchQuery("Proactiveness instructions", limit=5)).results
    texts = [r.text for r in results]
    assert len(texts) == len(set(texts))  # no text twice
    top = results[0]
    assert len(top.duplicates) == 2
    assert {d.rsplit(":", 1)[0] for d in top.duplicates} | {top.transcript} == {
        str(folder / n) for n in ("a.jsonl", "b.jsonl", "c.jsonl")
    }


def test_a_session_is_one_project_however_often_claude_changes_folder(
    corpus: Corpus, corpus_store: EdgeStore, embedder: OnnxEmbedder
) -> None:
    """The d-kimuson session starts in /path/to/Demo and cds into todo-app and
    todo-app/types: every chunk of it is project Demo."""
    path = corpus.files["d-kimuson__claude-code-viewer__fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"]
    points = corpus_store.scroll(SearchFilter(transcript=str(path)), 1000)
    assert {p["cwd"] for p in points} > {"/path/to/Demo"}  # it did move
    assert {p["project_path"] for p in points} == {"/path/to/Demo"}
    for given in ("/path/to/Demo", "/path/to/Demo/", "demo", "DEMO", "-path-to-Demo", "/path/to/Demo/todo-app/types"):
        found = search(corpus_store, embedder, SearchQuery("todo", SearchFilter(projects=(given,)), 50)).results
        assert found and {r.project for r in found} == {"Demo"}, given
        assert any(r.transcript == str(path) for r in found)
    with pytest.raises(ProjectNotFound, match=r"did you mean 'spotter'"):
        search(corpus_store, embedder, SearchQuery("todo", SearchFilter(projects=("spoter",)), 5))


def test_projects_with_the_same_folder_name_stay_apart(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    for owner in ("a", "b"):
        folder = settings.projects_dir / f"-home-{owner}-app"
        folder.mkdir(parents=True)
        record = {
            "type": "user",
            "uuid": owner,
            "sessionId": owner,
            "cwd": f"/home/{owner}/app",
            "message": {"role": "user", "content": f"deploy the {owner} service to staging"},
        }
        (folder / f"{owner}.jsonl").write_bytes(orjson.dumps(record) + b"\n")
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        everything = search(store, embedder, SearchQuery("deploy service staging", limit=5)).results
        assert {r.project for r in everything} == {"a/app", "b/app"}
        only_a = search(store, embedder, SearchQuery("deploy", SearchFilter(projects=("a/app",)), 5)).results
        assert [r.session_id for r in only_a] == ["a"]
        assert {
            r.session_id
            for r in search(store, embedder, SearchQuery("deploy", SearchFilter(projects=("app",)), 5)).results
        } == {"a", "b"}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True, capture_output=True
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to make a repository and a worktree")
@pytest.mark.parametrize("grouped", [True, False])
def test_a_repositorys_subfolders_and_worktrees_are_one_project(
    tmp_path: Path, embedder: OnnxEmbedder, grouped: bool
) -> None:
    repo, worktree = tmp_path / "code" / "shop", tmp_path / "code" / "shop-feature"
    (repo / "api").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=repo)
    git("worktree", "add", "-q", str(worktree), cwd=repo)
    settings = make_settings(tmp_path, group_repositories=grouped)
    for n, cwd in enumerate((repo, repo / "api", worktree)):
        folder = settings.projects_dir / f"-p{n}"
        folder.mkdir(parents=True)
        record = {
            "type": "user",
            "uuid": f"u{n}",
            "sessionId": f"s{n}",
            "cwd": str(cwd),
            "message": {"role": "user", "content": f"checkout flow step {n}"},
        }
        (folder / f"s{n}.jsonl").write_bytes(orjson.dumps(record) + b"\n")
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        points = store.scroll(SearchFilter(), 100)
        if grouped:
            assert {p["project_path"] for p in points} == {str(repo)}
            assert {p["started_in"] for p in points} == {str(repo), str(repo / "api"), str(worktree)}
            from_worktree = search(store, embedder, SearchQuery("checkout", SearchFilter(projects=(str(worktree),)), 5))
            assert {r.session_id for r in from_worktree.results} == {"s0", "s1", "s2"}
        else:
            assert {p["project_path"] for p in points} == {str(repo), str(repo / "api"), str(worktree)}


def test_fuse_ranks_by_every_phrasing_and_says_who_found_what() -> None:
    def hit(i: str) -> Hit:
        return Hit(i, 0.0, {"id": i})

    lists = [
        (0, 1.0, [hit("a"), hit("b")]),  # the query: dense
        (0, 1.0, [hit("b")]),  # the query: BM25
        (1, 1.0, [hit("c"), hit("b"), hit("a")]),  # an alternative: dense
        (1, 1.0, []),  # an alternative: BM25, nothing
    ]
    fused, found_by = fuse(lists, k=60)
    assert [h.id for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61 + 1 / 62, abs=1e-6)
    assert found_by == {"b": [0, 1], "a": [0, 1], "c": [1]}  # best rank first; a tie: the query first
    one = [(0, 1.0, [Hit("x", 0.5, {})])]
    assert fuse(one, k=60) == ([Hit("x", 0.5, {})], {"x": [0]})  # one list: the engine's own scores
    tied = [Hit("q", 1 / 61, {}), Hit("p", 1 / 61, {}), Hit("r", 0.9 / 61, {})]  # rank 1 dense vs rank 1 BM25
    for order in (tied, [tied[1], tied[0], tied[2]]):  # as the engine returned them, in either order
        assert [h.id for h in fuse([(0, 1.0, order)], k=60)[0]] == ["p", "q", "r"]


def test_fuse_weighs_each_list_and_a_small_k_favours_top_ranks() -> None:
    def hit(i: str) -> Hit:
        return Hit(i, 0.0, {"id": i})

    # "a": first in two lists of three; "b": eighth in all three
    lists = [
        (0, 1.0, [hit("a"), *(hit(f"x{n}") for n in range(6)), hit("b")]),
        (1, 1.0, [hit("a"), *(hit(f"y{n}") for n in range(6)), hit("b")]),
        (2, 1.0, [*(hit(f"z{n}") for n in range(7)), hit("b")]),
    ]
    wide, _ = fuse(lists, k=60)
    narrow, _ = fuse(lists, k=10)
    rank = {k: [h.id for h in fused] for k, fused in (("wide", wide), ("narrow", narrow))}
    assert rank["wide"].index("b") < rank["wide"].index("a")  # k 60: eighth everywhere beats first in two
    assert rank["narrow"].index("a") < rank["narrow"].index("b")  # k 10: first in two wins
    weighed, _ = fuse([(0, 1.0, [hit("q")]), (1, 1.5, [hit("k")])], k=10)
    assert [h.id for h in weighed] == ["k", "q"]
    assert [h.score for h in weighed] == pytest.approx([1.5 / 11, 1 / 11], abs=1e-6)


def test_alternatives_are_fused_by_the_plan(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    """With alternatives, the dense and BM25 list of every phrasing are fused
    with ``phrasings_k``; an alternative's BM25 list weighs
    ``alternative_lexical_weight``, the query's own ``lexical_weight``."""
    query = SearchQuery(
        "which dialects got colorized in the browser bundle",
        limit=10,
        alternatives=("highlight.js languages registered in app.js bundle", "highlight.js languages registered bundle"),
    )
    plan = FusionPlan()
    assert (plan.phrasings_k, plan.lexical_weight, plan.alternative_lexical_weight) == (10, 1.0, 1.5)
    lists = []
    for i, (text, vector) in enumerate(zip(query.phrasings(), embedder.embed_queries(query.phrasings()), strict=True)):
        lists.append((i, plan.dense_weight, corpus_store.dense(vector.tolist(), SearchFilter(), plan.depth)))
        weight = plan.alternative_lexical_weight if i else plan.lexical_weight
        lists.append((i, weight, corpus_store.lexical(lexical_text(text), SearchFilter(), plan.depth)))
    fused, _ = fuse(lists, plan.phrasings_k)
    expected = [(h.payload["transcript"], h.payload["line_start"], round(h.score, 6)) for h in fused]
    got = [(r.transcript, r.line_start, r.score) for r in search(corpus_store, embedder, query, plan).results]
    assert got == [e for e in expected if (e[0], e[1], e[2]) in set(got)][: len(got)]
    assert got[0][2] == pytest.approx(expected[0][2])
    before = FusionPlan(phrasings_k=60, alternative_lexical_weight=1.0)
    assert [r.score for r in search(corpus_store, embedder, query, before).results] != [s for _, _, s in got]


def test_phrasings_are_checked_and_travel_as_repeated_q() -> None:
    assert SearchQuery(" why ", alternatives=("why", "", " how ")).phrasings() == ["why", "how"]
    request = SearchRequest("why did it fail", alternatives=("exit code 137", "docker oom"))
    params = request.params()
    assert [v for k, v in params if k == "q"] == ["why did it fail", "exit code 137", "docker oom"]
    values: dict[str, list[str]] = {}
    for k, v in params:
        values.setdefault(k, []).append(v)
    again = SearchRequest.from_params(lambda k: values.get(k, [None])[0], lambda k: values.get(k, []))
    assert again == request
    with pytest.raises(ConfigError, match="at most 3 alternative"):
        SearchRequest("q", alternatives=("a", "b", "c", "d")).query(Decay())


@pytest.mark.parametrize(
    ("query", "alternatives", "name", "lines"),
    [
        (
            "known gotcha: the very first typing pass crawls while it builds its lookup table",
            ("dialyzer first run slow because it builds the PLT", "dialyzer PLT first run slow"),
            "marot__spotter__subagent.jsonl",
            (57, 72, 77),
        ),
        (
            "which dialects got colorized in the browser bundle",
            ("highlight.js languages registered in app.js bundle", "highlight.js languages registered bundle"),
            "agent-a2898e3.jsonl",
            (80, 144),
        ),
    ],
)
def test_alternatives_find_a_question_asked_in_other_words(
    corpus_store: EdgeStore,
    embedder: OnnxEmbedder,
    query: str,
    alternatives: tuple[str, ...],
    name: str,
    lines: tuple[int, ...],
) -> None:
    """The user's words, plus how it was said at the time and a keyword form
    (as Claude writes them, without seeing the transcript): the lists of all
    three are fused, and each hit says which phrasings found it."""
    response = search(corpus_store, embedder, SearchQuery(query, limit=5, alternatives=alternatives))
    assert response.alternatives == list(alternatives)
    top = [
        r
        for r in response.results
        if r.transcript.endswith(name) and any(r.line_start <= x <= r.line_end for x in lines)
    ]
    assert top and set(top[0].found_by) & set(alternatives)
    assert all(r.found_by and set(r.found_by) <= {query, *alternatives} for r in response.results)
    assert len({r.text for r in response.results}) == len(response.results)  # one result per exchange


def test_a_search_counts_no_point_it_does_not_return(corpus_store: EdgeStore, embedder: OnnxEmbedder) -> None:
    """Naming the projects needs their paths, not their sizes: an exact facet
    over the whole store counts every point (hundreds of ms at 250k)."""
    asked: list[tuple[str, bool]] = []

    class Watched:
        def __getattr__(self, name: str) -> object:
            return getattr(corpus_store, name)

        def facet(self, key: str, where: SearchFilter, limit: int, exact: bool = True) -> list:
            asked.append((key, exact))
            return corpus_store.facet(key, where, limit, exact)

    corpus_store.remembered.clear()
    project = search(Watched(), embedder, SearchQuery("ls -la", limit=1)).results[0].project  # type: ignore[arg-type]
    assert asked and all(not exact for key, exact in asked if key == "project_path")
    asked.clear()  # the store unchanged since: the names are known
    response = search(Watched(), embedder, SearchQuery("ls -la", SearchFilter(projects=(project,)), 3))  # type: ignore[arg-type]
    assert response.results
    assert not [key for key, _ in asked if key == "project_path"]
