"""The console's web application (aiohttp): settings, middlewares, templates, start and stop.

Every request passes, in order: `guard` (security headers; any failure becomes a page with a
clear message and the right status, never a stack trace), then `sessions` (the session cookie;
sign-in when the cluster needs SASL; on POST the CSRF token and Origin; the read-only mode).
Handlers live in node/console/handlers.py; they reach the cluster only through
node/console/cluster.py and messages.py, which use the SDK.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from strom import __version__
from strom.client.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    KafkaTimeoutError,
    StromError,
)

from .cluster import ClusterAccess, Refused
from .rates import RateSampler
from .render import InputError, human_bytes, human_time_ms
from .sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    SessionStore,
    csrf_ok,
    origin_ok,
)

log = logging.getLogger("strom.console")

HERE = Path(__file__).parent
# The largest form the console reads: a produced message up to PRODUCE_BYTES_MAX (1 MiB) plus its
# key, headers and fields. A larger body is refused with a page saying so.
REQUEST_BYTES_MAX = 2 * 1024 * 1024
SHUTDOWN_S = 3.0
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
PUBLIC_PATHS = ("/login", "/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConsoleSettings:
    bootstrap: str
    # SDK connection options (security.protocol, ssl.*) without any SASL identity of its own.
    options: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool = False
    admin_listeners: tuple[str, ...] = ()
    tls: bool = False  # the console's own listener serves HTTPS

    @property
    def login_required(self) -> bool:
        return str(self.options.get("security_protocol", "")).upper() in SASL_PROTOCOLS


SETTINGS = web.AppKey("settings", ConsoleSettings)
STORE = web.AppKey("store", SessionStore)
SHARED = web.AppKey("shared", dict)  # {"access": ClusterAccess} when nobody signs in
RATES = web.AppKey("rates", RateSampler)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SESSION = web.RequestKey("session", Session)
SESSION_CREATED = web.RequestKey("session_created", bool)
NEW_SESSION = web.ResponseKey("new_session", bool)  # set by the sign-in handler


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = human_bytes
    env.filters["time_ms"] = human_time_ms
    env.filters["path_part"] = lambda text: quote(str(text), safe="")
    return env


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    settings = request.app[SETTINGS]
    flash = session.state.pop("flash", []) if session is not None else []
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf_token if session else "",
            read_only=settings.read_only,
            login_required=settings.login_required,
            flash=flash,
            version=__version__,
            path=request.path,
            **values,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html")


def redirect(location: str) -> web.Response:
    """A 303 See Other (after a POST, the browser GETs the next page)."""
    return web.Response(status=303, headers={"Location": location})


def flash(request: web.Request, message: str) -> None:
    session = request[SESSION]
    session.state.setdefault("flash", []).append(message)


def access(request: web.Request) -> ClusterAccess:
    """The SDK clients of whoever makes this request."""
    if request.app[SETTINGS].login_required:
        found = request[SESSION].state.get("access")
        if not isinstance(found, ClusterAccess):
            raise web.HTTPFound("/login")
        return found
    shared: ClusterAccess = request.app[SHARED]["access"]
    return shared


# ---- middlewares -------------------------------------------------------------------------------

SECURITY_HEADERS = {
    # Scripts and styles only from this console's own files: no inline code, nothing external.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _error_status(exc: BaseException) -> tuple[int, str, str]:
    """(status, title, message) of a failure shown to a person."""
    if isinstance(exc, InputError):
        return 400, "That input cannot be used", str(exc)
    if isinstance(exc, Refused):
        return 409, "Not possible right now", str(exc)
    if isinstance(exc, AuthorizationFailedError):
        return 403, "Not allowed", f"The cluster refused this for your user: {exc.message or exc}"
    if isinstance(exc, KafkaTimeoutError):
        return 504, "The cluster did not answer", exc.message or str(exc)
    if isinstance(exc, StromError):
        status = 404 if exc.name == "UNKNOWN_TOPIC_OR_PARTITION" else 502
        return (
            status,
            "The cluster refused",
            f"{exc.name}: {exc.message}" if exc.message else exc.name,
        )
    return (
        500,
        "Something went wrong",
        "The console hit an internal error; its log has the details.",
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPRedirection:
        raise
    except web.HTTPRequestEntityTooLarge:
        response = page(
            request,
            "error.html",
            413,
            title="Too large",
            message=f"The form was larger than the console accepts ({REQUEST_BYTES_MAX:,} bytes). "
            "Produce large messages with the SDK or `strom produce`.",
        )
    except web.HTTPException as exc:
        response = page(request, "error.html", exc.status, title=exc.reason, message=exc.text or "")
    except AuthenticationFailedError:
        # The person's password changed or the user was deleted: their session is over.
        session = request.get(SESSION)
        if session is not None and session.signed_in:
            await request.app[STORE].end(session)
        response = redirect("/login")
    except Exception as exc:
        status, title, message = _error_status(exc)
        if status == 500:
            log.exception("console request %s %s failed", request.method, request.path)
        response = page(request, "error.html", status, title=title, message=message)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        session = request.get(SESSION)
        if session is not None and (request.get(SESSION_CREATED) or response.get(NEW_SESSION)):
            response.set_cookie(
                SESSION_COOKIE,
                session.session_id,
                httponly=True,
                samesite="Strict",
                secure=request.app[SETTINGS].tls,
                path="/",
            )
    return response


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's session (a new one, with its cookie set by `guard`, when it has none)."""
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    session = await store.get(request.cookies.get(SESSION_COOKIE))
    request[SESSION_CREATED] = session is None
    request[SESSION] = session or await store.create()
    session = request[SESSION]
    public = request.path.startswith(PUBLIC_PATHS)
    if settings.login_required and not session.signed_in and not public:
        if request.method == "GET" and not request.path.endswith((".json", "/tail")):
            return redirect("/login")
        raise web.HTTPUnauthorized(text="Sign in first.")
    if request.method not in ("GET", "HEAD"):
        await _check_post(request, session, settings)
    return await handler(request)


async def _check_post(request: web.Request, session: Session, settings: ConsoleSettings) -> None:
    if not origin_ok(request.headers.get("Origin"), request.host, request.scheme):
        raise web.HTTPForbidden(text="This form was sent from another site: refused.")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        presented = str((await request.post()).get(CSRF_FIELD, ""))
    if not csrf_ok(session, presented):
        raise web.HTTPForbidden(
            text="The form's security token is missing or stale (CSRF protection): reload the "
            "page and try again."
        )
    if settings.read_only and request.path not in ("/login", "/logout"):
        raise web.HTTPForbidden(text="This console runs read-only: it changes nothing.")


# The console's own two assets, read once: no request ever names a file on disk.
STATIC_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}
_STATIC: dict[str, bytes] = {}


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_TYPES:
        raise web.HTTPNotFound()
    if name not in _STATIC:
        _STATIC[name] = (HERE / "static" / name).read_bytes()
    return web.Response(body=_STATIC[name], content_type=STATIC_TYPES[name], charset="utf-8")


# ---- start and stop ----------------------------------------------------------------------------


async def _close_session(session: Session) -> None:
    found = session.state.get("access")
    if isinstance(found, ClusterAccess):
        await found.close()


def make_app(settings: ConsoleSettings) -> web.Application:
    from .handlers import add_routes

    app = web.Application(middlewares=[guard, sessions], client_max_size=REQUEST_BYTES_MAX)
    app[SETTINGS] = settings
    app[STORE] = SessionStore(_close_session)
    app[SHARED] = {}
    app[RATES] = RateSampler(settings.admin_listeners)
    app[TEMPLATES] = templates()
    add_routes(app)
    app.router.add_get("/static/{name}", static_file)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_startup(app: web.Application) -> None:
    settings = app[SETTINGS]
    if not settings.login_required:
        app[SHARED]["access"] = ClusterAccess(settings.bootstrap, settings.options)
    app[RATES].start()


async def _on_cleanup(app: web.Application) -> None:
    await app[RATES].stop()
    await app[STORE].close_all()
    shared = app[SHARED].pop("access", None)
    if shared is not None:
        await shared.close()


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


async def serve(
    settings: ConsoleSettings, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> None:
    """Serve until cancelled (Ctrl-C or SIGTERM), then close every client cleanly."""
    # Open live tails end with the process; do not wait a minute for them on shutdown.
    runner = web.AppRunner(make_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        shown = "localhost" if host in ("", "0.0.0.0", "127.0.0.1") else host
        print(
            f"strom console on {scheme}://{shown}:{port}/ (cluster {settings.bootstrap})",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
