"""The web console over HTTP: pages, the token, CSRF, reasons, audit, security headers, the CLI."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.console_support import TOKEN, SearchRollout, console_server, csrf_of
from tests.ops_support import App, run

from tipkit import audit
from tipkit.console import create_app
from tipkit.console._chart import points, svg
from tipkit.console._cli import plan
from tipkit.console._security import SESSION_SECONDS, Keys
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


class Console:
    """An application on a MemoryStore and its console served by uvicorn on loopback."""

    def __init__(
        self, url: str, store: MemoryStore, app: App, clock: FakeClock
    ) -> None:
        self.url = url
        self.store = store
        self.app = app
        self.clock = clock

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)

    @contextlib.contextmanager
    def signed_in(self, actor: str = "alice") -> Iterator[httpx.Client]:
        with self.client() as client:
            csrf = csrf_of(client.get("/login").text)
            form = {"csrf": csrf, "token": TOKEN, "actor": actor}
            assert 303 == client.post("/login", data=form).status_code
            yield client

    def act(self, client: httpx.Client, **form: str) -> httpx.Response:
        csrf = csrf_of(client.get("/login").text)  # the sign-in form always has one
        return client.post("/act", data={"csrf": csrf, **form})

    def flags_state(self) -> tuple[int, int]:
        return self.store.version("flags"), len(audit.read(self.store))


@pytest.fixture
def console(clock: FakeClock) -> Iterator[Console]:
    store = MemoryStore(clock=clock)
    app = App(store, clock)
    with console_server(create_app(store, token=TOKEN, clock=clock)) as url:
        yield Console(url, store, app, clock)


def test_pages_render_with_strict_security_headers_and_no_script(
    console: Console,
) -> None:
    """Every page answers 200 with a CSP forbidding scripts, DENY framing and no-store."""
    with console.client() as client:
        assert "/flags" == client.get("/").headers["location"]
        for path in ("/flags", "/rollouts", "/breakers", "/limits", "/audit", "/login"):
            r = client.get(path)
            assert 200 == r.status_code, path
            assert "<script" not in r.text
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert "DENY" == r.headers["x-frame-options"]
            assert "no-store" == r.headers["cache-control"]
        assert "text/css" in client.get("/console.css").headers["content-type"]


def test_kill_from_the_console_is_served_and_audited_under_the_signed_in_name(
    console: Console,
) -> None:
    """A signed-in kill with a reason is what the application serves, audited as alice."""
    with console.signed_in("alice") as client:
        r = console.act(
            client, kind="flag", verb="kill", target="checkout", reason="5xx up"
        )
        assert 303 == r.status_code
        (rec,) = audit.read(console.store)
        assert f"/flags?done={rec.id}" == r.headers["location"]
        assert f"done: audit record {rec.id}" in client.get(r.headers["location"]).text
        ctx = {"targeting_key": "u1"}
        assert "off" == console.app.flags.evaluate("checkout", ctx).variant
        assert ("alice", "flag.kill", "flag:checkout", "5xx up") == (
            rec.actor,
            rec.action,
            rec.target,
            rec.reason,
        )
        assert {"killed": False} == rec.before
        r = console.act(client, kind="flag", verb="kill", target="checkout", reason="x")
        assert "/flags?done=unchanged" == r.headers["location"]
        r = console.act(
            client, kind="flag", verb="revive", target="checkout", reason="ok"
        )
        assert 303 == r.status_code
        assert ["flag.kill", "flag.revive"] == [
            x.action for x in audit.read(console.store)
        ]


def test_an_action_without_signing_in_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    """A POST with a good CSRF pair but no session gets 401; no state, no record."""
    before = console.flags_state()
    with console.client() as client:
        r = console.act(client, kind="flag", verb="kill", target="checkout", reason="x")
        assert 401 == r.status_code
        assert "sign in first" in r.text
        client.cookies.set("tipkit_console_session", "616c696365.1.deadbeef")
        forged = console.act(
            client, kind="flag", verb="kill", target="checkout", reason="x"
        )
        assert 401 == forged.status_code
    assert before == console.flags_state()
    assert not console.app.flags.killed()


def test_a_forged_or_missing_csrf_token_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    """Signed in, a POST whose CSRF field is forged, missing or another cookie's gets 403."""
    before = console.flags_state()
    with console.signed_in() as client:
        good = csrf_of(client.get("/flags").text)
        nonce, _, sig = good.partition(".")
        base = {"kind": "flag", "verb": "kill", "target": "checkout", "reason": "x"}
        for forged in (f"{nonce}.{'0' * len(sig)}", "", f"{'a' * 32}.{sig}", nonce):
            r = client.post("/act", data={"csrf": forged, **base})
            assert 403 == r.status_code, forged
            assert "CSRF" in r.text
        with console.client() as other:  # the field without its cookie
            other.cookies.set(
                "tipkit_console_session", client.cookies["tipkit_console_session"]
            )
            assert 403 == other.post("/act", data={"csrf": good, **base}).status_code
        r = client.post(
            "/act",
            data={"csrf": good, **base},
            headers={"origin": "https://evil.example"},
        )
        assert 403 == r.status_code
        assert "Origin" in r.text
    assert before == console.flags_state()


def test_bad_input_is_refused_with_why_and_nothing_changes(console: Console) -> None:
    """No reason, an unknown flag, an unknown action, a non-form body: 400, nothing written."""
    before = console.flags_state()
    with console.signed_in() as client:
        for form, why in (
            ({"kind": "flag", "verb": "kill", "target": "checkout", "reason": " "},
             "reason must be a non-empty string"),
            ({"kind": "flag", "verb": "kill", "target": "nope", "reason": "r"},
             "unknown flag"),
            ({"kind": "flag", "verb": "explode", "target": "checkout", "reason": "r"},
             "unknown action"),
        ):  # fmt: skip
            r = console.act(client, **form)
            assert 400 == r.status_code, form
            assert why in r.text
        r = client.post("/act", json={"kind": "flag"})
        assert 400 == r.status_code
        r = client.post("/act", content=b"a=" + b"x" * 20_000,
                        headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert 400 == r.status_code
    assert before == console.flags_state()


def test_a_wrong_token_signs_nobody_in(console: Console) -> None:
    """A wrong token gets 401 and no session cookie; an empty name gets 400."""
    with console.client() as client:
        csrf = csrf_of(client.get("/login").text)
        r = client.post(
            "/login", data={"csrf": csrf, "token": "x" * 30, "actor": "mallory"}
        )
        assert 401 == r.status_code
        assert "wrong token" in r.text
        assert "tipkit_console_session" not in r.headers.get("set-cookie", "")
        r = client.post("/login", data={"csrf": csrf, "token": TOKEN, "actor": " "})
        assert 400 == r.status_code
        r = client.post("/login", data={"csrf": "x.y", "token": TOKEN, "actor": "a"})
        assert 403 == r.status_code


def test_a_session_expires_after_a_shift_and_signing_out_ends_it(
    console: Console,
) -> None:
    """After SESSION_SECONDS, or after sign-out, an action gets 401."""
    with console.signed_in() as client:
        assert 'id="actor">alice<' in client.get("/flags").text
        csrf = csrf_of(client.get("/flags").text)
        assert 303 == client.post("/logout", data={"csrf": csrf}).status_code
        assert "sign in to act" in client.get("/flags").text
    with console.signed_in() as client:
        console.clock.advance(SESSION_SECONDS + 1)
        r = console.act(client, kind="flag", verb="kill", target="checkout", reason="x")
        assert 401 == r.status_code
    assert not console.app.flags.killed()


def test_a_foreign_host_header_is_refused(console: Console) -> None:
    """A DNS-rebinding page (Host: evil.example) gets 400 from a loopback console."""
    with console.client() as client:
        assert 400 == client.get("/flags", headers={"host": "evil.example"}).status_code
        assert 200 == client.get("/flags", headers={"host": "localhost"}).status_code


def test_rollout_and_breaker_controls_go_through_the_operator_and_are_audited(
    console: Console,
) -> None:
    """Pause, promote, rollback a rollout and open a breaker from the console, all audited."""
    with console.signed_in("bob") as client:
        page = client.get("/rollouts").text
        assert 'id="rollout-pricing"' in page
        assert '<li class="now">10%</li>' in page
        for verb in ("pause", "resume", "promote", "rollback"):
            r = console.act(client, kind="rollout", verb=verb, target="pricing",
                            reason=f"{verb} it")  # fmt: skip
            assert "/rollouts?done=" in r.headers["location"], r.text
        r = console.act(client, kind="rollout", verb="promote", target="pricing",
                        reason="again")  # fmt: skip
        assert 400 == r.status_code
        assert "rolled back" in r.text
        r = console.act(client, kind="breaker", verb="open", target="payments",
                        reason="provider down")  # fmt: skip
        assert "/breakers?done=" in r.headers["location"]
        page = client.get("/breakers").text
        assert "closed → forced_open" in page
        assert "provider down" in page
    console.app.breaker.sync()
    assert "forced_open" == console.app.breaker.state.value
    assert [
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.rollback",
        "breaker.open",
    ] == [r.action for r in audit.read(console.store, actor="bob")]


def test_the_audit_page_filters_escapes_and_refreshes_when_live(
    console: Console,
) -> None:
    """Target and actor filters work, reasons are escaped, live mode adds a meta refresh."""
    with console.signed_in("alice") as client:
        console.act(client, kind="flag", verb="kill", target="checkout",
                    reason="<script>alert(1)</script>")  # fmt: skip
        console.act(client, kind="breaker", verb="open", target="payments", reason="r")
        page = client.get("/audit").text
        assert "<script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "http-equiv" not in page
        only = client.get("/audit", params={"target": "payments"}).text
        assert "breaker:payments" in only
        assert "flag:checkout" not in only
        assert "no records" in client.get("/audit", params={"actor": "bob"}).text
        live = client.get("/audit", params={"live": "1"}).text
        assert '<meta http-equiv="refresh" content="5">' in live
        r = client.get("/audit", params={"since": "yesterday-ish"})
        assert 400 == r.status_code
        assert "since must be" in r.text


def test_the_rollout_page_charts_canary_against_control_with_the_bound(
    clock: FakeClock,
) -> None:
    """A judged rollout's page has its timeline, one chart point per verdict and the bound."""
    store = MemoryStore(clock=clock)
    search = SearchRollout(store, clock)
    search.play()
    with console_server(create_app(store, clock=clock)) as url:
        page = httpx.get(f"{url}/rollouts", timeout=30).text
    assert '<b class="status">rolled_back</b>' in page
    assert 3 == page.count('class="canary"')  # two passes and the rollback
    assert 3 == page.count('class="bound"')
    assert 3 == page.count('class="margin"')
    assert "judge: <b>FAIL</b>" in page
    assert 'id="pause-search"' not in page  # read-only: no buttons


def test_chart_points_come_from_the_history_then_the_latest_verdict() -> None:
    """points() takes each judged transition, then a newer live verdict as "now"."""
    check = {"guard": "errors", "canary_rate": 0.02, "control_rate": 0.01,
             "lower": -0.01, "upper": 0.03, "margin": 0.05}  # fmt: skip
    newer = {**check, "canary_rate": 0.04}
    rollout: dict[str, Any] = {
        "history": [
            {"action": "started", "percent": 10},
            {"action": "advanced", "percent": 50, "verdict": {"guards": [check]}},
        ],
        "verdict": {"guards": [newer]},
    }
    assert {"errors": [("advanced 50%", check), ("now", newer)]} == points(rollout)
    drawn = svg("errors", points(rollout)["errors"])
    assert 2 == drawn.count('class="canary"')
    assert "<script" not in svg("<script>", [])


def test_a_read_only_console_offers_no_action_and_refuses_sign_in(
    clock: FakeClock,
) -> None:
    """Without a token: no buttons, and signing in is refused (401)."""
    store = MemoryStore(clock=clock)
    App(store, clock)
    with (
        console_server(create_app(store, clock=clock)) as url,
        httpx.Client(base_url=url) as client,
    ):
        page = client.get("/flags").text
        assert "read-only" in page
        assert 'action="/act"' not in page
        assert 'name="token"' not in client.get("/login").text
        r = client.post("/login", data={"csrf": "a.b", "token": TOKEN, "actor": "a"})
        assert 403 == r.status_code


def test_a_short_token_is_refused_at_start() -> None:
    """A token under 16 characters is a ValueError naming how to make a good one."""
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(MemoryStore(), token="short")  # noqa: S106  # the point
    assert Keys(None, FakeClock()).read_only


def test_the_command_binds_loopback_and_refuses_an_anonymous_public_console() -> None:
    """`tipkit console` defaults to 127.0.0.1; another host without a token is a usage error."""
    code, out, _ = run("console", "--help")
    assert 0 == code
    assert "127.0.0.1" in out

    def args(**kw: Any) -> argparse.Namespace:
        return argparse.Namespace(
            **{"host": "127.0.0.1", "port": 8377, "token": None, **kw}
        )

    assert (None, ("127.0.0.1", "localhost")) == plan(args())
    with pytest.raises(ValueError, match="never anonymous"):
        plan(args(host="10.0.0.5"))
    assert (TOKEN, ("127.0.0.1", "localhost", "ops.internal")) == plan(
        args(host="ops.internal", token=TOKEN)
    )
    assert (TOKEN, ("*",)) == plan(args(host="0.0.0.0", token=TOKEN))  # noqa: S104
    with pytest.raises(ValueError, match="--port"):
        plan(args(port=0))
    assert re.search(r"TIPKIT_CONSOLE_TOKEN", out)
