"""The console's web shell without a cluster: CSRF on every action, Origin checks, read-only
mode, sign-in when the cluster needs SASL, session expiry, size limits and error pages.

The app is real (aiohttp, the real middlewares and templates); its bootstrap points at a closed
port, so only requests that are refused before reaching the cluster are used here."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from strom.node.console.app import REQUEST_BYTES_MAX, ConsoleSettings, make_app
from strom.node.console.sessions import SESSION_COOKIE, Session, SessionStore

CLOSED = "127.0.0.1:9"  # discard port: nothing answers gRPC there


def run(settings: ConsoleSettings, body: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(settings))) as client:
            await body(client)

    asyncio.run(main())


async def token_of(client: TestClient, path: str = "/login") -> str:
    """A page's CSRF token (and, through the client's cookie jar, its session)."""
    response = await client.get(path, allow_redirects=False)
    html = await response.text()
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


PLAIN = ConsoleSettings(bootstrap=CLOSED)
SASL = ConsoleSettings(bootstrap=CLOSED, options={"security_protocol": "SASL_PLAINTEXT"})


def test_every_action_needs_the_sessions_csrf_token() -> None:
    async def body(client: TestClient) -> None:
        # Any page gives a session (a 404 needs no cluster); its cookie comes back on each POST.
        response = await client.get("/no/such/page")
        assert response.status == 404
        cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))
        assert SESSION_COOKIE in cookie
        without = await client.post("/topics/orders/delete", data={"confirm": "orders"})
        assert without.status == 403 and "CSRF" in await without.text()
        forged = await client.post(
            "/topics/orders/delete", data={"confirm": "orders", "csrf_token": "guess"}
        )
        assert forged.status == 403
        for path in ("/topics", "/topics/orders/produce", "/groups/g/reset/execute", "/logout"):
            assert (await client.post(path, data={})).status == 403, path

    run(PLAIN, body)


def test_a_valid_token_lets_the_action_through_to_its_own_checks() -> None:
    async def body(client: TestClient) -> None:
        token = await token_of_plain(client)
        wrong = await client.post(
            "/topics/orders/delete", data={"confirm": "other", "csrf_token": token}
        )
        assert wrong.status == 400
        assert "type its name (orders)" in await wrong.text()
        header = await client.post(
            "/topics/orders/delete", data={"confirm": "x"}, headers={"X-CSRF-Token": token}
        )
        assert header.status == 400
        # Another session's token is worth nothing here.
        async with TestClient(TestServer(make_app(PLAIN))) as other:
            stolen = await other.post(
                "/topics/orders/delete", data={"confirm": "x", "csrf_token": token}
            )
            assert stolen.status == 403

    run(PLAIN, body)


async def token_of_plain(client: TestClient) -> str:
    """The CSRF token of the client's session. A plain console's forms are all on pages that
    call the cluster, so take it from the session store (the browser tests read it from forms)."""
    response = await client.get("/no/such/page")
    assert response.status == 404
    app = client.server.app
    assert app is not None
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE]
    store: SessionStore = next(v for v in app.values() if isinstance(v, SessionStore))
    session = await store.get(cookie.value)
    assert session is not None
    return session.csrf_token


def test_a_post_from_another_origin_is_refused() -> None:
    async def body(client: TestClient) -> None:
        token = await token_of_plain(client)
        response = await client.post(
            "/topics/orders/delete",
            data={"confirm": "x", "csrf_token": token},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status == 403 and "another site" in await response.text()

    run(PLAIN, body)


def test_read_only_console_refuses_actions_and_hides_their_forms() -> None:
    async def body(client: TestClient) -> None:
        token = await token_of_plain(client)
        response = await client.post(
            "/topics/orders/delete", data={"confirm": "orders", "csrf_token": token}
        )
        assert response.status == 403 and "read-only" in await response.text()

    run(ConsoleSettings(bootstrap=CLOSED, read_only=True), body)


def test_sasl_cluster_means_signing_in_first() -> None:
    async def body(client: TestClient) -> None:
        first = await client.get("/", allow_redirects=False)
        assert first.status == 303 and first.headers["Location"] == "/login"
        assert (await client.get("/groups/g/lag.json")).status == 401
        assert (await client.get("/topics/t/tail")).status == 401
        token = await token_of(client)
        no_token = await client.post("/login", data={"username": "a", "password": "b"})
        assert no_token.status == 403
        empty = await client.post("/login", data={"username": "a", "csrf_token": token})
        assert empty.status == 400 and "user name and a password" in await empty.text()
        page = await client.get("/login")
        html = await page.text()
        assert 'type="password"' in html and "Content-Security-Policy" in page.headers
        assert page.headers["X-Frame-Options"] == "DENY"
        cookie = page.cookies.get(SESSION_COOKIE) or first.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"

    run(SASL, body)


def test_an_oversized_form_gets_a_clear_page() -> None:
    async def body(client: TestClient) -> None:
        token = await token_of_plain(client)
        response = await client.post(
            "/topics/orders/produce",
            data={"value": "x" * (REQUEST_BYTES_MAX + 1), "csrf_token": token},
        )
        text = await response.text()
        assert response.status == 413 and "larger than the console accepts" in text
        assert "Traceback" not in text

    run(PLAIN, body)


def test_sessions_expire_and_sign_in_gets_a_new_id() -> None:
    now = [0.0]
    closed: list[Session] = []

    async def on_close(session: Session) -> None:
        closed.append(session)

    async def main() -> None:
        store = SessionStore(on_close, sessions_max=2, idle_timeout_s=60, clock=lambda: now[0])
        a = await store.create()
        signed = await store.sign_in(a, "alice", "pw")
        assert signed.session_id != a.session_id and signed.csrf_token != a.csrf_token
        assert await store.get(a.session_id) is None and closed == [a]
        assert signed.username == "alice" and "pw" not in repr(signed)
        now[0] = 59
        assert await store.get(signed.session_id) is signed  # touched at 59
        now[0] = 118
        assert await store.get(signed.session_id) is signed
        now[0] = 200
        assert await store.get(signed.session_id) is None
        assert closed[-1] is signed and signed.password is None
        b, c = await store.create(), await store.create()
        now[0] = 201
        await store.get(c.session_id)
        await store.create()  # over the bound: the least recently seen (b) goes
        assert b in closed and len(store) == 2

    asyncio.run(main())


def test_strom_console_explains_a_missing_extra_and_refuses_a_console_identity(
    monkeypatch: Any, capsys: Any, tmp_path: Any
) -> None:
    from strom.node import cli

    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if the console extra were missing
    assert cli.main(["console"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: strom console needs the console extra (aiohttp is not installed): "
        "pip install 'strom[console]'"
    )
    monkeypatch.undo()
    config = tmp_path / "console.properties"
    config.write_text("security.protocol=SASL_PLAINTEXT\nsasl.username=ops\nsasl.password=pw\n")
    assert cli.main(["console", "--command-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "holds no cluster identity of its own" in err and "pw" not in err.replace("password", "")


def test_the_two_assets_are_served_and_nothing_else() -> None:
    async def body(client: TestClient) -> None:
        script = await client.get("/static/console.js")
        assert script.status == 200 and script.content_type == "text/javascript"
        assert "EventSource" in await script.text()
        style = await client.get("/static/console.css")
        assert style.status == 200 and style.content_type == "text/css"
        for path in ("/static/app.py", "/static/..%2fapp.py", "/static/", "/static/../app.py"):
            assert (await client.get(path)).status == 404, path

    run(PLAIN, body)
