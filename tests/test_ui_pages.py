"""The web UI's pages through Starlette's TestClient: list, run, payloads, downloads, stats."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

from engine.cli._stats import compute
from engine.events import decode_history
from engine.pipeline import history_mermaid

from .test_ui_support import BASE, UiEnv, client_for, make_env, ui_env

__all__ = ["ui_env"]


def _ids(page: str) -> list[str]:
    """The workflow ids the list shows, in order."""
    return [
        html.unescape(m) for m in re.findall(r'<td class="wid"><a href="[^"]*">([^<]*)</a>', page)
    ]


# --------------------------------------------------------------------------- the list


def test_the_list_shows_every_run_with_counts_per_status(ui_env: UiEnv) -> None:
    page = ui_env.http.get("/")
    assert page.status_code == 200
    ids = _ids(page.text)
    assert {"order-done", "order-waiting", "doomed-1", "patient-1", "kid-1"} <= set(ids)
    assert ids.count("counter-1") == 3  # every run of a continue-as-new chain
    assert "all <b>9</b>" in page.text
    assert re.search(r"status-running[^>]*>running <b>2</b>", page.text)
    assert re.search(r"status-continued_as_new[^>]*>continued_as_new <b>2</b>", page.text)
    # it refreshes itself: htmx polls the table fragment with the same filters
    assert 'hx-get="/partials/workflows?size=50" hx-trigger="every 5s"' in page.text


def test_the_list_filters_by_status_type_prefix_and_time(ui_env: UiEnv) -> None:
    get = ui_env.http.get
    assert set(_ids(get("/", params={"status": "running"}).text)) == {"order-waiting", "patient-1"}
    assert set(_ids(get("/", params={"type": "order"}).text)) == {"order-done", "order-waiting"}
    assert _ids(get("/", params={"prefix": "order-d"}).text) == ["order-done"]
    both = get("/", params={"prefix": "order-", "status": "completed"}).text
    assert _ids(both) == ["order-done"]
    assert "all <b>2</b>" in both  # counts cover the prefix, whatever the status
    later = (ui_env.clock.now() + timedelta(hours=1)).isoformat()
    assert _ids(get("/", params={"since": later}).text) == []
    assert len(_ids(get("/", params={"until": later}).text)) == 9
    assert len(_ids(get("/", params={"since": "1d"}).text)) in (0, 9)  # wall clock vs virtual


def test_the_list_paginates(ui_env: UiEnv) -> None:
    first = ui_env.http.get("/", params={"size": "20"})
    assert len(_ids(first.text)) == 9 and "next page" not in first.text
    env = make_env()
    for n in range(45):
        env.client.start("noop", n, id=f"bulk-{n:02d}")
    seen: list[str] = []
    url = "/?size=20"
    while url:
        page = env.http.get(html.unescape(url))
        seen += _ids(page.text)
        m = re.search(r'<a href="([^"]+)">next page', page.text)
        url = m.group(1) if m else ""
    assert sorted(seen) == [f"bulk-{n:02d}" for n in range(45)]
    offset = env.http.get("/", params={"prefix": "bulk-", "size": "20", "offset": "40"})
    assert len(_ids(offset.text)) == 5 and "first page" in offset.text


def test_the_list_partial_and_bad_filters(ui_env: UiEnv) -> None:
    part = ui_env.http.get("/partials/workflows", params={"status": "failed"})
    assert part.status_code == 200 and part.text.startswith('<section id="runs"')
    assert _ids(part.text) == ["doomed-1"] and "<html" not in part.text
    bad = ui_env.http.get("/", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "neither an ISO 8601 time" in html.unescape(bad.text)
    assert ui_env.http.get("/", params={"status": "sleeping"}).status_code == 400
    assert ui_env.http.get("/", params={"page": "not-a-token"}).status_code == 400


# --------------------------------------------------------------------------- one run


def _page(env: UiEnv, wid: str, run: str | None = None) -> str:
    response = env.http.get("/workflow", params={"id": wid, **({"run": run} if run else {})})
    assert response.status_code == 200, response.text
    return html.unescape(response.text)


def test_a_completed_run_shows_input_result_queries_graph_and_timeline(ui_env: UiEnv) -> None:
    page = _page(ui_env, "order-done")
    assert "COMPLETED" in page and '"ann"' in page
    assert '"receipt": "receipt-ann-250"' in page and '"by": "max"' in page  # the result
    assert "stage" in page and '"done"' in page  # the latest query value
    history = ui_env.client.history("order-done")
    for ev in history:  # one row per event
        assert f'id="event-{ev.index}"' in page
        assert type(ev).__name__ in page
    assert page.count('class="boundary"') == 3  # the decisions, where a reset may go
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "charge" in svg and "signal approve" in svg and "completed" in svg
    assert "timer 14d" in svg  # the signal's timeout was a timer (cancelled when it came)


def test_a_failed_run_shows_its_failure(ui_env: UiEnv) -> None:
    page = _page(ui_env, "doomed-1")
    assert "FAILED" in page and "Declined" in page and "card of cy declined" in page
    assert "traceback" in page and "state-failed" in page


def test_a_retrying_activity_is_pending_with_attempts_and_next_retry(ui_env: UiEnv) -> None:
    page = _page(ui_env, "patient-1")
    section = page[page.index("Pending activities") : page.index("</table>", page.index("Pending"))]
    assert "unreachable" in section and "<td>1</td>" in section  # one failed attempt
    retry_at = (ui_env.clock.now() + timedelta(minutes=5)).isoformat(timespec="milliseconds")
    assert retry_at.replace("+00:00", "Z") in section
    assert "ConnectionError: db.internal did not answer" in section
    assert "state-retrying" in page


def test_timers_show_their_due_time() -> None:
    env = make_env()
    env.client.start("napper", 3, id="nap")
    env.run()
    page = _page(env, "nap")
    fire = (env.clock.now() + timedelta(days=3)).isoformat(timespec="milliseconds")
    section = page[page.index("<h3>Timers</h3>") :]
    assert "3d" in section and fire.replace("+00:00", "Z") in section


def test_parent_child_and_continue_as_new_links(ui_env: UiEnv) -> None:
    parent_page = _page(ui_env, "parent-1")
    kid = ui_env.client.describe("kid-1")
    assert f"/workflow?id=kid-1&run={kid.run_id}" in parent_page
    kid_page = _page(ui_env, "kid-1")
    parent_run = ui_env.client.describe("parent-1").run_id
    assert f"/workflow?id=parent-1&run={parent_run}" in kid_page and "Parent" in kid_page
    runs = [i for i in ui_env.store.runs() if i.id == "counter-1"]
    first = min(runs, key=lambda i: i.start_time)
    page = _page(ui_env, "counter-1", first.run_id)
    assert "CONTINUED_AS_NEW" in page and "Continued as" in page and "Latest run" in page
    nxt = re.search(
        r"/workflow\?id=counter-1&run=(\w+)\">counter-1 / \w+</a> "
        r"<span class=\"muted\">\(Continued as",
        page,
    )
    assert nxt is not None
    second = _page(ui_env, "counter-1", nxt.group(1))
    assert "Continued from" in second and first.run_id in second


def test_the_live_part_polls_until_the_run_closes(ui_env: UiEnv) -> None:
    page = _page(ui_env, "order-waiting")
    m = re.search(r'<section id="live" class="panel" hx-get="([^"]+)" hx-trigger="every 5s"', page)
    assert m is not None
    part = ui_env.http.get(m.group(1))
    assert part.status_code == 200 and "new event" not in part.text
    ui_env.client.signal("order-waiting", "approve", "ok")
    ui_env.run()
    part = ui_env.http.get(m.group(1))
    assert "new events, and the run has closed: reload" in part.text
    assert "hx-get" not in part.text  # a closed run stops polling
    closed = _page(ui_env, "order-done")
    assert 'id="live" class="panel">' in closed


def test_history_download_is_what_tpp_verify_reads(ui_env: UiEnv) -> None:
    response = ui_env.http.get("/workflow/history.json", params={"id": "order-done"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].startswith('attachment; filename="order-done.')
    assert decode_history(response.content) == ui_env.client.history("order-done")


def test_mermaid_download_is_history_mermaid(ui_env: UiEnv) -> None:
    response = ui_env.http.get("/workflow/graph.mmd", params={"id": "parent-1"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    history = ui_env.client.history("parent-1")
    assert response.text == history_mermaid(history, ui_env.client.decode)


def test_a_payload_is_fetched_on_its_own(ui_env: UiEnv) -> None:
    r = ui_env.http.get("/payload", params={"id": "order-done", "event": "0", "n": "0"})
    assert r.status_code == 200 and "<html" in r.text and "&#34;ann&#34;" in r.text
    r = ui_env.http.get(
        "/payload",
        params={"id": "order-done", "event": "0", "n": "0"},
        headers={"HX-Request": "true"},
    )
    assert r.text.startswith("<pre>") and "<html" not in r.text
    missing = ui_env.http.get("/payload", params={"id": "order-done", "event": "0", "n": "5"})
    assert missing.status_code == 404
    assert (
        ui_env.http.get(
            "/payload", params={"id": "order-done", "event": "999", "n": "0"}
        ).status_code
        == 404
    )
    assert (
        ui_env.http.get("/payload", params={"id": "order-done", "event": "x", "n": "0"}).status_code
        == 400
    )


def test_unknown_ids_and_missing_parameters(ui_env: UiEnv) -> None:
    missing = ui_env.http.get("/workflow", params={"id": "nope"})
    assert missing.status_code == 404 and "nope" in missing.text
    assert ui_env.http.get("/workflow").status_code == 400
    assert ui_env.http.get("/workflow", params={"id": "order-done", "run": "r0"}).status_code == 404
    assert ui_env.http.get("/no/such/page").status_code == 404
    hx = ui_env.http.get("/workflow", params={"id": "nope"}, headers={"HX-Request": "true"})
    assert hx.status_code == 404 and "<html" not in hx.text


@pytest.mark.parametrize(
    "wid",
    [
        "orders/2026/11 #7?x=1&y=2",
        "  spaced out  ",
        "..",
        "../../etc/passwd",
        "ünïcödé ☃ 注文",
        "%2F%20already-encoded",
        "x" * 3000,
    ],
)
def test_odd_ids_round_trip_through_every_link(wid: str) -> None:
    env = make_env()
    env.client.start("order", "zed", id=wid)
    env.worker.run_until_idle()
    listing = env.http.get("/")
    assert _ids(listing.text) == [wid]
    link = html.unescape(re.search(r'<td class="wid"><a href="([^"]+)"', listing.text).group(1))  # type: ignore[union-attr]
    page = env.http.get(link)
    assert page.status_code == 200 and html.escape(wid, quote=False) in page.text
    for path in ("/workflow/history.json", "/workflow/graph.mmd"):
        got = re.search(rf'href="({re.escape(path)}\?[^"]+)"', page.text)
        assert got is not None and env.http.get(html.unescape(got.group(1))).status_code == 200
    fetch = re.search(r'href="(/payload\?[^"]+)"|hx-get="(/payload\?[^"]+)"', page.text)
    if fetch is not None:  # pragma: no cover - inline payloads need no fetch
        assert env.http.get(html.unescape(fetch.group(1) or fetch.group(2))).status_code == 200
    prefix = env.http.get("/", params={"prefix": wid[:5]})
    assert _ids(prefix.text) == [wid]


def test_an_id_with_a_lone_surrogate_does_not_break_the_list() -> None:
    env = make_env()
    wid = "bad\udcffid"  # any str is a valid id; UTF-8 cannot encode this one
    env.client.start("order", "zed", id=wid)
    env.client.start("order", "zed", id="fine")
    listing = env.http.get("/")
    assert listing.status_code == 200 and "bad\\udcffid" in listing.text and "fine" in listing.text
    link = re.search(r'<td class="wid"><a href="([^"]+)">bad', listing.text)
    assert link is not None and "bad%ED%B3%BFid" in link.group(1)
    page = env.http.get(html.unescape(link.group(1)))
    assert page.status_code == 200 and "bad\\udcffid" in page.text


def test_the_stats_page_has_the_data_of_tpp_stats(ui_env: UiEnv) -> None:
    page = ui_env.http.get("/stats")
    assert page.status_code == 200
    text = page.text
    assert "9 run(s)" in text
    order_row = re.search(r"<tr><td><a href=\"/\?type=order\">order</a></td>(.*?)</tr>", text)
    assert order_row is not None
    want = compute(ui_env.store).workflows["order"]
    fields = ("running", "due", "blocked", "completed", "failed", "cancelled", "terminated")
    numbers = [str(getattr(want, f)) for f in (*fields, "continued_as_new", "total")]
    assert re.findall(r"<td>(\d+)</td>", order_row.group(1)) == numbers
    assert numbers[0] == "1" and numbers[-1] == "2"
    charge_row = re.search(r"<tr><td>charge</td>(.*?)</tr>", text)
    assert charge_row is not None and "<td>5</td>" in charge_row.group(1)
    only = ui_env.http.get("/stats", params={"type": "doomed"})
    assert "1 run(s)" in only.text
    assert ui_env.http.get("/stats", params={"since": "whenever"}).status_code == 400


def test_static_files_are_served_by_name_only(ui_env: UiEnv) -> None:
    js = ui_env.http.get("/static/htmx-2.0.11.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"] and 'version:"2.0.11"' in js.text
    licence = ui_env.http.get("/static/htmx-2.0.11.LICENSE.txt")
    assert licence.status_code == 200 and "Zero-Clause BSD" in licence.text
    assert ui_env.http.get("/static/ui.css").status_code == 200
    for name in ("../_app.py", "..%2F_app.py", "nope.js", "%2e%2e%2f__init__.py"):
        assert ui_env.http.get(f"/static/{name}").status_code == 404


def test_a_client_on_another_base_url_is_the_same_app(ui_env: UiEnv) -> None:
    other = client_for(ui_env.app, base_url="http://localhost:8233")
    assert other.get("/").status_code == 200
    assert BASE.startswith("http://127.0.0.1")
