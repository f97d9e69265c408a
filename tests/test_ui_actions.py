"""The web UI's actions: signal, cancel, terminate and reset, each confirmed before it acts."""

from __future__ import annotations

import html
import re

from engine import Status
from engine.events import SignalReceived, WorkflowStarted

from .test_ui_support import UiEnv, csrf_of, make_env, post_confirmed, ui_env

__all__ = ["ui_env"]


def _location(response: object) -> str:
    return html.unescape(response.headers["location"])  # type: ignore[attr-defined]


def test_a_signal_is_confirmed_then_sent_and_the_workflow_completes(ui_env: UiEnv) -> None:
    token = csrf_of(ui_env.http.get("/workflow", params={"id": "order-waiting"}).text)
    length = ui_env.client.describe("order-waiting").history_length
    form = {"id": "order-waiting", "name": "approve", "payload": '{"by": "ada", "ok": true}'}
    first = ui_env.http.post("/workflow/signal", data={**form, "csrf": token})
    assert first.status_code == 200 and "Send a signal?" in first.text
    assert "&#34;by&#34;: &#34;ada&#34;" in first.text  # the payload, as it will be sent
    assert ui_env.client.describe("order-waiting").history_length == length  # nothing sent yet
    done = post_confirmed(ui_env.http, "/workflow/signal", form)
    assert done.status_code == 303
    assert _location(done) == "/workflow?id=order-waiting&done=signal"
    (signal,) = [e for e in ui_env.client.history("order-waiting") if isinstance(e, SignalReceived)]
    assert signal.name == "approve" and ui_env.client.decode(signal.payload) == {
        "by": "ada",
        "ok": True,
    }
    ui_env.run()
    assert ui_env.client.result("order-waiting")["decision"] == {"by": "ada", "ok": True}
    page = ui_env.http.get(_location(done))
    assert "Signal sent." in page.text and "COMPLETED" in page.text


def test_an_empty_payload_is_null_and_bad_json_is_refused(ui_env: UiEnv) -> None:
    post_confirmed(ui_env.http, "/workflow/signal", {"id": "order-waiting", "name": "approve"})
    ui_env.run()
    assert ui_env.client.result("order-waiting")["decision"] is None
    token = csrf_of(ui_env.http.get("/").text)
    bad = ui_env.http.post(
        "/workflow/signal", data={"id": "patient-1", "name": "x", "payload": "{oops", "csrf": token}
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    nameless = ui_env.http.post("/workflow/signal", data={"id": "patient-1", "csrf": token})
    assert nameless.status_code == 400 and "name" in nameless.text


def test_signalling_a_closed_run_says_so(ui_env: UiEnv) -> None:
    done = post_confirmed(ui_env.http, "/workflow/signal", {"id": "order-done", "name": "approve"})
    assert done.status_code == 409 and "Conflict" in done.text
    assert "is completed; it takes no more events" in done.text


def test_cancel_is_confirmed_then_requested(ui_env: UiEnv) -> None:
    token = csrf_of(ui_env.http.get("/").text)
    first = ui_env.http.post(
        "/workflow/cancel", data={"id": "order-waiting", "reason": "dup", "csrf": token}
    )
    assert "Cancel the workflow?" in first.text and "finally blocks" in first.text
    done = post_confirmed(ui_env.http, "/workflow/cancel", {"id": "order-waiting", "reason": "dup"})
    assert done.status_code == 303 and _location(done).endswith("done=cancel")
    ui_env.run()
    assert ui_env.client.describe("order-waiting").status is Status.CANCELLED


def test_terminate_is_confirmed_then_done_with_its_reason(ui_env: UiEnv) -> None:
    done = post_confirmed(
        ui_env.http, "/workflow/terminate", {"id": "patient-1", "reason": "host retired"}
    )
    assert done.status_code == 303
    assert ui_env.client.describe("patient-1").status is Status.TERMINATED
    page = ui_env.http.get(_location(done)).text
    assert "Terminated." in page and "host retired" in page
    default = post_confirmed(ui_env.http, "/workflow/terminate", {"id": "order-waiting"})
    assert default.status_code == 303
    assert "terminated from the web UI" in ui_env.http.get(_location(default)).text


def test_reset_to_a_decision_boundary_starts_a_new_run(ui_env: UiEnv) -> None:
    page = ui_env.http.get("/workflow", params={"id": "doomed-1"}).text
    options = re.findall(r'<option value="(\d+)"', page[page.index('name="event"') :])
    assert options == ["1", "4"]
    old = ui_env.client.describe("doomed-1")
    token = csrf_of(page)
    first = ui_env.http.post(
        "/workflow/reset",
        data={"id": "doomed-1", "run": old.run_id, "event": "1", "reason": "fixed", "csrf": token},
    )
    assert "Reset the workflow?" in first.text and "keeps events 0 to 0" in first.text
    done = post_confirmed(
        ui_env.http,
        "/workflow/reset",
        {"id": "doomed-1", "run": old.run_id, "event": "1", "reason": "fixed"},
    )
    assert done.status_code == 303
    new = ui_env.client.describe("doomed-1")
    assert new.run_id != old.run_id and _location(done).endswith(f"run={new.run_id}&done=reset")
    started = ui_env.client.history("doomed-1")[0]
    assert isinstance(started, WorkflowStarted) and started.reset_from is not None
    landing = html.unescape(ui_env.http.get(_location(done)).text)
    assert "Reset from" in landing and old.run_id in landing and "fixed" in landing


def test_reset_refuses_a_point_that_is_not_a_decision(ui_env: UiEnv) -> None:
    done = post_confirmed(ui_env.http, "/workflow/reset", {"id": "doomed-1", "event": "2"})
    assert done.status_code == 400 and "not a WorkflowTaskCompleted" in done.text
    token = csrf_of(ui_env.http.get("/").text)
    junk = ui_env.http.post("/workflow/reset", data={"id": "doomed-1", "event": "x", "csrf": token})
    assert junk.status_code == 400 and "event index" in junk.text
    nobody = ui_env.http.post("/workflow/reset", data={"id": "nobody", "event": "1", "csrf": token})
    assert nobody.status_code == 404


def test_actions_on_odd_ids() -> None:
    env = make_env()
    wid = "queue/ä ☃/#1?&=%20"
    env.client.start("order", "q", id=wid)
    env.run()
    done = post_confirmed(env.http, "/workflow/signal", {"id": wid, "name": "approve"})
    assert done.status_code == 303
    env.run()
    assert env.client.describe(wid).status is Status.COMPLETED
    landing = env.http.get(_location(done))
    assert landing.status_code == 200 and html.escape(wid, quote=False) in landing.text


def test_closed_runs_offer_reset_only(ui_env: UiEnv) -> None:
    page = ui_env.http.get("/workflow", params={"id": "order-done"}).text
    assert "/workflow/reset" in page
    assert "/workflow/signal" not in page and "/workflow/terminate" not in page
    running = ui_env.http.get("/workflow", params={"id": "order-waiting"}).text
    for path in ("signal", "cancel", "terminate", "reset"):
        assert f'action="/workflow/{path}"' in running
