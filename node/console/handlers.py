"""The console's pages and actions. GET pages only read; every POST changes something and has
passed the CSRF and read-only checks (node/console/app.py) before it gets here. After an action
the browser is redirected to a page (POST/redirect/GET) with a one-line result on it."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from strom.client.errors import AuthenticationFailedError, AuthorizationFailedError, StromError
from strom.client.offset_reset import STRATEGIES, ResetRequest

from . import cluster as views
from . import messages
from .app import NEW_SESSION, RATES, SESSION, SETTINGS, STORE, access, flash, page, redirect
from .render import (
    CAP_BYTES_DEFAULT,
    CAP_BYTES_MAX,
    RENDER_MODES,
    InputError,
    parse_config_items,
    parse_headers,
    parse_int,
    parse_timestamp_ms,
)

CHART_WIDTH, CHART_HEIGHT = 600, 120
LAG_GROUPS_PER_SESSION_MAX = 50
TAILS_PER_SESSION_MAX = 4
VISIBILITY_TTL_S = 10.0


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/overview/live.json", overview_live)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/topics", topics)
    app.router.add_post("/topics", topic_create)
    app.router.add_get("/topics/{name}", topic)
    app.router.add_post("/topics/{name}/configs", topic_configs)
    app.router.add_post("/topics/{name}/partitions", topic_partitions)
    app.router.add_post("/topics/{name}/delete", topic_delete)
    app.router.add_get("/topics/{name}/messages", topic_messages)
    app.router.add_post("/topics/{name}/produce", topic_produce)
    app.router.add_get("/topics/{name}/tail", topic_tail)
    app.router.add_get("/groups", groups)
    app.router.add_get("/groups/{group}", group)
    app.router.add_get("/groups/{group}/lag.json", group_lag)
    app.router.add_post("/groups/{group}/reset", group_reset_plan)
    app.router.add_post("/groups/{group}/reset/execute", group_reset_execute)


def _form_text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


# ---- sign in -----------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    if not request.app[SETTINGS].login_required:
        return redirect("/")
    return page(request, "login.html", error="", username="")


async def login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not settings.login_required:
        return redirect("/")
    form = await request.post()
    username, password = _form_text(form, "username").strip(), _form_text(form, "password")
    if not username or not password:
        return page(
            request, "login.html", 400, error="Give a user name and a password.", username=username
        )
    candidate = views.ClusterAccess(
        settings.bootstrap,
        {**settings.options, "sasl_username": username, "sasl_password": password},
    )
    try:
        await candidate.admin.describe_cluster()
    except AuthenticationFailedError:
        await candidate.close()
        return page(
            request,
            "login.html",
            401,
            error="The cluster refused that user name and password.",
            username=username,
        )
    except BaseException:
        await candidate.close()
        raise
    session = await request.app[STORE].sign_in(request[SESSION], username, password)
    session.state["access"] = candidate
    request[SESSION] = session
    response = redirect("/")
    response[NEW_SESSION] = True
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[STORE].end(request[SESSION])
    return redirect("/login" if request.app[SETTINGS].login_required else "/")


# ---- overview ----------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    data = await views.overview(access(request))
    rates = request.app[RATES]
    return page(request, "overview.html", overview=data, rates_configured=rates.configured)


async def _visibility(request: web.Request) -> tuple[set[str], bool]:
    """(topics this person may describe, whether they may describe the cluster), cached for a
    few seconds per session: the live numbers are filtered by it."""
    session = request[SESSION]
    cached = session.state.get("visibility")
    if cached is not None and time.monotonic() - cached[0] < VISIBILITY_TTL_S:
        return cached[1], cached[2]
    admin = access(request).admin
    visible = set(await admin.list_topics(include_internal=True))
    try:
        await admin.describe_quorum()
        cluster = True
    except AuthorizationFailedError:
        cluster = False
    session.state["visibility"] = (time.monotonic(), visible, cluster)
    return visible, cluster


async def overview_live(request: web.Request) -> web.StreamResponse:
    sampler = request.app[RATES]
    visible, cluster = await _visibility(request)
    rates = sampler.wanted()
    body: dict[str, Any] = {
        "configured": sampler.configured,
        "listeners_ok": rates.listeners_ok,
        "problems": list(rates.problems) if cluster else [],
    }
    if cluster:
        body.update(
            messages_in_per_s=rates.messages_in_per_s,
            bytes_in_per_s=rates.bytes_in_per_s,
            bytes_out_per_s=rates.bytes_out_per_s,
        )
    body["topics"] = {t: r for t, r in rates.messages_in_per_s_by_topic.items() if t in visible}
    return web.json_response(body)


# ---- topics ------------------------------------------------------------------------------------


async def topics(request: web.Request) -> web.StreamResponse:
    notes: list[str] = []
    rows = await views.topic_rows(access(request), notes)
    return page(
        request,
        "topics.html",
        rows=rows,
        notes=notes,
        rates_configured=request.app[RATES].configured,
    )


async def topic_create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = _form_text(form, "name").strip()
    if not name:
        raise InputError("give the new topic a name")
    partitions = parse_int(_form_text(form, "partitions") or "-1", "partitions", minimum=-1)
    replication = parse_int(
        _form_text(form, "replication_factor") or "-1", "replication factor", minimum=-1
    )
    configs = parse_config_items(_form_text(form, "configs"))
    await views.create_topic(access(request), name, partitions, replication, configs)
    flash(request, f"Created topic {name}.")
    return redirect(f"/topics/{quote(name, safe='')}")


async def topic(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    detail = await views.topic_detail(access(request), name)
    return page(request, "topic.html", name=name, detail=detail)


async def topic_configs(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await request.post()
    admin = access(request).admin
    current = (await admin.describe_topic_configs([name])).get(name, {})
    overrides = (await admin.describe_topic_configs([name], overrides_only=True)).get(name, {})
    changed: dict[str, str] = {}
    reset = [str(k).removeprefix("reset:") for k in form if str(k).startswith("reset:")]
    for key in current:
        value = _form_text(form, f"config:{key}").strip()
        if key not in reset and f"config:{key}" in form and value != current[key]:
            changed[key] = value
    deleted = [k for k in reset if k in overrides]
    if not changed and not deleted:
        flash(request, "Nothing changed.")
    else:
        await admin.alter_topic_configs(name, changed, deleted)
        parts = [f"{k}={v}" for k, v in sorted(changed.items())] + [f"{k} reset" for k in deleted]
        flash(request, f"Altered {name}: {', '.join(parts)}.")
    return redirect(f"/topics/{quote(name, safe='')}")


async def topic_partitions(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await request.post()
    count = parse_int(_form_text(form, "count"), "new partition count", minimum=1)
    await access(request).admin.create_partitions(name, count)
    flash(request, f"{name} now has {count} partitions.")
    return redirect(f"/topics/{quote(name, safe='')}")


async def topic_delete(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await request.post()
    if _form_text(form, "confirm") != name:
        raise InputError(f"to delete the topic, type its name ({name}) in the confirmation box")
    await access(request).admin.delete_topics([name])
    flash(request, f"Deleted topic {name}.")
    return redirect("/topics")


# ---- messages ----------------------------------------------------------------------------------


def browse_query(query: Any) -> messages.BrowseQuery:
    """A BrowseQuery from the page's query string; InputError says what is wrong."""
    raw_partition = (query.get("partition") or "all").strip()
    partition = None if raw_partition == "all" else parse_int(raw_partition, "partition")
    mode = query.get("mode") or "newest"
    if mode not in messages.MODES:
        raise InputError(f"mode must be one of {', '.join(messages.MODES)}, got {mode!r}")
    render = query.get("render") or "auto"
    if render not in RENDER_MODES:
        raise InputError(f"render must be one of {', '.join(RENDER_MODES)}, got {render!r}")
    limit = parse_int(
        query.get("limit") or str(messages.BROWSE_LIMIT_DEFAULT),
        "limit",
        minimum=1,
        maximum=messages.BROWSE_LIMIT_MAX,
    )
    cap = parse_int(
        query.get("cap") or str(CAP_BYTES_DEFAULT), "size cap", minimum=16, maximum=CAP_BYTES_MAX
    )
    offset = parse_int(query.get("offset"), "offset") if mode == "offset" else None
    timestamp = parse_timestamp_ms(query.get("timestamp")) if mode == "timestamp" else None
    return messages.BrowseQuery(partition, mode, offset, timestamp, limit, render, cap)


async def topic_messages(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    partitions = await messages.partitions_of(access(request), name, None)
    form = dict(request.query)
    error = ""
    result = None
    status = 200
    try:
        query = browse_query(request.query)
        result = await messages.browse(access(request), name, query)
    except InputError as exc:
        error, status = str(exc), 400
    return page(
        request,
        "messages.html",
        status,
        name=name,
        partitions=partitions,
        form=form,
        result=result,
        error=error,
        render_modes=RENDER_MODES,
        modes=messages.MODES,
    )


async def topic_produce(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await request.post()
    raw_partition = _form_text(form, "partition").strip()
    partition = None if raw_partition in ("", "any") else parse_int(raw_partition, "partition")
    key = _form_text(form, "key").encode() if _form_text(form, "key") else None
    value = _form_text(form, "value").encode()
    headers = parse_headers(_form_text(form, "headers"))
    produced = await messages.produce(access(request), name, key, value, headers, partition)
    flash(request, f"Produced to partition {produced.partition} at offset {produced.offset}.")
    return redirect(f"/topics/{quote(name, safe='')}/messages?partition={produced.partition}")


async def topic_tail(request: web.Request) -> web.StreamResponse:
    """Server-sent events of new records (see messages.tail)."""
    name = request.match_info["name"]
    session = request[SESSION]
    query = browse_query({**request.query, "mode": "newest"})
    partitions = await messages.partitions_of(access(request), name, query.partition)
    if session.state.get("tails", 0) >= TAILS_PER_SESSION_MAX:
        raise InputError(f"at most {TAILS_PER_SESSION_MAX} live tails at once: close one first")
    resume = messages.decode_positions(request.headers.get("Last-Event-ID"))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    session.state["tails"] = session.state.get("tails", 0) + 1
    try:
        await response.prepare(request)
        events = messages.tail(
            access(request), name, partitions, resume, query.render, query.cap_bytes
        )
        async for event, data, event_id in events:
            if not event:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(f"event: {event}\nid: {event_id}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the page was closed
    except StromError as exc:
        if response.prepared:
            message = json.dumps({"error": f"{exc.name}: {exc.message}"})
            await response.write(f"event: failed\ndata: {message}\n\n".encode())
        else:
            raise
    finally:
        session.state["tails"] = max(0, session.state.get("tails", 1) - 1)
    return response


# ---- consumer groups ---------------------------------------------------------------------------


async def groups(request: web.Request) -> web.StreamResponse:
    rows = await access(request).admin.list_groups()
    return page(request, "groups.html", rows=rows)


def _lag_history(request: web.Request, group_id: str, total_lag: int) -> views.LagHistory:
    session = request[SESSION]
    histories: dict[str, views.LagHistory] = session.state.setdefault("lag", {})
    history = histories.pop(group_id, None) or views.LagHistory()
    histories[group_id] = history  # most recently seen last
    while len(histories) > LAG_GROUPS_PER_SESSION_MAX:
        histories.pop(next(iter(histories)))
    history.add(int(time.time() * 1000), total_lag)
    return history


async def group(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["group"]
    detail = await views.group_detail(access(request), group_id)
    history = _lag_history(request, group_id, detail.total_lag)
    points = views.lag_chart_points(history.samples, CHART_WIDTH, CHART_HEIGHT)
    return page(
        request,
        "group.html",
        detail=detail,
        points=points,
        strategies=STRATEGIES,
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )


async def group_lag(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["group"]
    detail = await views.group_detail(access(request), group_id)
    history = _lag_history(request, group_id, detail.total_lag)
    return web.json_response(
        {
            "total_lag": detail.total_lag,
            "state": detail.group.state,
            "points": views.lag_chart_points(history.samples, CHART_WIDTH, CHART_HEIGHT),
            "max_lag": max(lag for _, lag in history.samples),
            "partitions": [
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "committed": r.committed,
                    "end": r.end,
                    "lag": r.lag,
                }
                for r in detail.offsets
            ],
        }
    )


def reset_request(form: Any) -> ResetRequest:
    strategy = _form_text(form, "strategy")
    if strategy not in STRATEGIES:
        raise InputError(f"choose how to reset: one of {', '.join(STRATEGIES)}")
    value: int | None = None
    raw = _form_text(form, "value")
    if strategy == "to-offset":
        value = parse_int(raw, "offset")
    elif strategy == "shift-by":
        value = parse_int(raw, "shift", minimum=-(2**62))
    elif strategy == "to-datetime":
        value = parse_timestamp_ms(raw)
    return ResetRequest(strategy, value)


async def group_reset_plan(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["group"]
    form = await request.post()
    request_ = reset_request(form)
    topic_name = _form_text(form, "topic").strip() or None
    plan = await views.plan_reset(access(request), group_id, topic_name, request_)
    return page(request, "reset.html", plan=plan, strategy=request_.strategy)


async def group_reset_execute(request: web.Request) -> web.StreamResponse:
    group_id = request.match_info["group"]
    form = await request.post()
    try:
        offsets = views.decode_plan(_form_text(form, "plan"))
    except ValueError as exc:
        raise InputError(f"the confirmed plan is malformed: {exc}") from None
    if not offsets:
        raise InputError("the plan is empty: nothing to reset")
    await views.execute_reset(access(request), group_id, offsets)
    flash(request, f"Reset {len(offsets)} committed offset(s) of {group_id}.")
    return redirect(f"/groups/{quote(group_id, safe='')}")
