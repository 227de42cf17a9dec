"""The aiohttp application that plays the EOS task API.

Routes (``API`` is ``/api/gdw/api``, ``SEARCH`` is ``/api/lms/search/v2``)::

    POST {API}?api_key=KEY           create a task            (rate limited: create lane)
    GET  {API}/{task_id}             status, or the result    (rate limited: status lane)
    POST {SEARCH}/{dataset}          search one dataset       (rate limited: search lane)
    POST {SEARCH}                    search search.satellites (rate limited: search lane)
    GET  /api/render/colormap/ALL    the colormaps offered; /{id}: one (see colormap_app)
    GET  /_sim/results/{task_id}     a finished result, no key, no rate limit (redirect target)
    GET  /_sim/counters              counters, bound_seconds, makespan_seconds, now_seconds
    GET  /_sim/tasks                 every task created, with timing and poll counts
    POST /_sim/config                JSON object of knob changes; {"outage_for": s} too
    POST /_sim/reset-counters        zero the counters

The key is accepted in the ``x-api-key`` header or the ``api_key`` query parameter. Every API
request passes the same gate, in this order, so each answer has one cause:
``html_status`` (an HTML page: not the API at all) → ``forbidden`` (403, JSON or text) →
``payment_required`` (402) → outage (503) → key (401) → rate limit (429, counted the way
``limiter`` says; a refusal is not counted) → injected 5xx → injected connection reset.
Then the endpoint's own logic runs:
parameter checks (400), unknown or expired task (404), pending (``pending_status`` JSON with
a status word), task error (200 JSON ``task_type: error``), and finally the result in the
configured form (bytes under ``result_content_type``; a ``redirect_status`` redirect or JSON
with the URL under ``result_url_field``, both to ``result_host``), subject to the body
faults (JSON instead, empty 200, wrong format, truncation, slow chunks). A search
checks its body (400, see ``search_app``) and answers a page of the catalogue (``catalogue``)
as seen from ``catalogue_today``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import time
import uuid
from typing import Any, Literal

import orjson
from aiohttp import web

from bulkfetch.simulator.colormap_app import add_routes as add_colormap_routes
from bulkfetch.simulator.config import SimConfig
from bulkfetch.simulator.images import FORMATS, GEOREFERENCES, result_body
from bulkfetch.simulator.limits import LaneLimit
from bulkfetch.simulator.search_app import parse_query, run_query
from bulkfetch.simulator.state import SimState, Task

__all__ = ["API_PATH", "RESULTS_PATH", "SEARCH_PATH", "STATE_KEY", "apply_changes", "make_app"]

API_PATH = "/api/gdw/api"
SEARCH_PATH = "/api/lms/search/v2"
RESULTS_PATH = "/_sim/results"
STATE_KEY = web.AppKey("bulkfetch_simulator_state", SimState)
_REQUIRED = ("view_id", "bm_type", "geometry", "px_size")


def make_app(state: SimState) -> web.Application:
    """A fresh application serving ``state``; the state may outlive many applications."""
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_post(API_PATH, _create)
    app.router.add_get(API_PATH + "/{task_id}", _status)
    app.router.add_post(SEARCH_PATH, _search)
    app.router.add_post(SEARCH_PATH + "/{dataset}", _search)
    app.router.add_get(RESULTS_PATH + "/{task_id}", _result)
    add_colormap_routes(app, STATE_KEY)
    app.router.add_get("/_sim/counters", _counters)
    app.router.add_get("/_sim/tasks", _tasks)
    app.router.add_post("/_sim/config", _configure)
    app.router.add_post("/_sim/reset-counters", _reset_counters)
    return app


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


def _reset(request: web.Request) -> web.Response:
    """Close the connection without answering; the client sees the server disconnect.

    The returned response is never delivered: aiohttp's attempt to send it meets the closed
    transport, and aiohttp treats that ConnectionError as a client gone away, quietly.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def _retry_after(mode: str, wait: float, window: float) -> dict[str, str]:
    if mode == "window":
        return {"Retry-After": str(max(1, math.ceil(window)))}
    if mode == "int":
        return {"Retry-After": str(max(1, math.ceil(wait)))}
    if mode == "float":
        return {"Retry-After": f"{max(wait, 1e-6):.6f}"}
    if mode == "date":
        # HTTP dates have whole seconds: round the wait up so obeying it is always enough.
        return {"Retry-After": email.utils.formatdate(time.time() + math.ceil(wait), usegmt=True)}
    return {}


_Lane = Literal["create", "status", "search"]


def _lane(state: SimState, lane: _Lane) -> tuple[LaneLimit, int, float, float]:
    """A lane's limiter, limit, window seconds and injected 5xx rate."""
    config = state.config
    if lane == "create":
        return (
            state.lane_limit(lane),
            config.create_limit,
            config.create_window,
            config.create_5xx_rate,
        )
    if lane == "status":
        return (
            state.lane_limit(lane),
            config.status_limit,
            config.status_window,
            config.status_5xx_rate,
        )
    return state.lane_limit(lane), config.search_limit, config.search_window, config.search_5xx_rate


def _count(state: SimState, lane: _Lane, what: str) -> None:
    """Add one to the counter ``{lane}_{what}`` (``calls``, ``429`` or ``5xx``)."""
    name = f"{lane}_{what}"
    setattr(state.counters, name, getattr(state.counters, name) + 1)


def _html_page(status: int) -> web.Response:
    """What a web server that is not the API answers: a page for people."""
    page = (
        "<!DOCTYPE html>\n<html><head><title>Welcome to our site</title></head>"
        f"<body><h1>Page {status}</h1><p>Nothing for machines here.</p></body></html>\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def _refusal(config: SimConfig) -> web.Response | None:
    """The key or its plan refused (403, 402), in the configured shape; None if not."""
    if config.forbidden:
        if config.forbidden_text:
            return web.Response(status=403, text="403: Forbidden")
        return _error(403, "forbidden: this key may not use the task API")
    if config.payment_required:
        return _error(402, "payment required: the plan has no credit left for this API")
    return None


def _gate(request: web.Request, state: SimState, lane: _Lane, now: float) -> web.Response | None:
    """The checks every API request passes (see module docstring); None means go on."""
    config, counters = state.config, state.counters
    if lane != "search":  # the makespan measures downloads: a search before a run is not one
        state.note_request(now)
    _count(state, lane, "calls")
    if config.html_status:
        return _html_page(config.html_status)
    refused = _refusal(config)
    if refused is not None:
        return refused
    if now < config.outage_until:
        _count(state, lane, "5xx")
        return _error(503, "service unavailable")
    keys = {request.headers.get("x-api-key"), request.query.get("api_key")} - {None}
    if config.api_key not in keys:
        return _error(401, "invalid or missing api key")
    window, limit, seconds, rate = _lane(state, lane)
    wait = window.admit(config.api_key, now, limit, seconds)
    if wait is not None:
        _count(state, lane, "429")
        return _error(429, "rate limit exceeded", _retry_after(config.retry_after, wait, seconds))
    if state.chance(rate):
        _count(state, lane, "5xx")
        status = state.fault_rng.choice((500, 502, 503))
        if status == 500:
            return _error(500, "simulated internal server error")
        # Proxies in front of real services answer 502/503 in text, not JSON.
        return web.Response(status=status, text=f"{status} simulated proxy error")
    if state.chance(config.reset_rate):
        counters.resets += 1
        return _reset(request)
    return None


def _check_create(body: Any, state: SimState) -> str | None:
    """Why this create body is refused, or None. Minimal, like a gateway's first look."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if body.get("type") != "jpeg":
        return f"unsupported task type {body.get('type')!r}; this simulator knows 'jpeg'"
    params = body.get("params")
    if not isinstance(params, dict):
        return "params must be a JSON object"
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        return f"missing required param(s): {', '.join(missing)}"
    if params.get("format", "jpeg") not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}"
    if params.get("georeference") not in (None, *GEOREFERENCES):
        return f"georeference must be one of {', '.join(GEOREFERENCES)}"
    geometry = params["geometry"]
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if state.config.polygon_only and kind != "Polygon":
        return f"geometry must be a GeoJSON Polygon, got {kind!r}"
    if params["view_id"] in state.config.bad_view_ids:
        return f"view_id {params['view_id']!r} not found"
    return None


async def _create(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    now = time.monotonic()
    refused = _gate(request, state, "create", now)
    if refused is not None:
        return refused
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    problem = _check_create(body, state)
    if problem is not None:
        return _error(400, problem)
    task = state.create_task(body["params"], now)
    req_id = str(uuid.uuid4())
    answer = {
        "status": "created",
        "task_id": task.task_id,
        "req_id": req_id,
        # Whole seconds as EOS sends them; a test's sub-second lifetime stays a float
        # rather than reading as 0 (which a client must take as "not given").
        "task_timeout": _seconds(state.config.task_timeout),
    }
    return _json(answer, state.config.create_status, {"X-Request-Id": req_id})


async def _status(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    now = time.monotonic()
    refused = _gate(request, state, "status", now)
    if refused is not None:
        return refused
    task = state.lookup(request.match_info["task_id"], now)
    if task is None:
        return _error(404, "task not found or expired")
    task.polls += 1
    if now < task.ready_at:
        state.counters.polls_not_ready += 1
        words = state.config.pending_words
        answer = {"status": words[(task.polls - 1) % len(words)], "task_id": task.task_id}
        return _json(answer, state.config.pending_status)
    if task.error:
        message = f"simulated task error: view {task.params.get('view_id')!r} could not be made"
        return _json({"task_type": "error", "error_message": {"error": message}})
    config = state.config
    if config.result_form == "bytes":
        return await _send_result(request, state, task)
    url = _result_url(request, config, task)
    if config.result_form == "redirect":
        return web.Response(status=config.redirect_status, headers={"Location": url})
    return _json(_url_answer(config.result_url_field, url, task.task_id))


def _result_url(request: web.Request, config: SimConfig, task: Task) -> str:
    """Where a finished task's result is: here, or on ``result_host`` (another origin)."""
    host = request.host
    if config.result_host is not None:
        port = request.url.port
        host = config.result_host + (f":{port}" if port else "")
    return f"{request.scheme}://{host}{RESULTS_PATH}/{task.task_id}"


def _url_answer(field: str, url: str, task_id: str) -> dict[str, Any]:
    """A finished task's JSON with ``url`` at ``field`` (``url``, ``result.url``, ``files[]``)."""
    as_list = field.endswith("[]")
    names = field.removesuffix("[]").split(".")
    value: Any = [url] if as_list else url
    for name in reversed(names[1:]):
        value = {name: value}
    return {"status": "done", "task_id": task_id, names[0]: value}


def _catalogue_today(config: SimConfig) -> dt.date:
    """The date the catalogue is seen from: ``config.catalogue_today``, or the UTC date."""
    if config.catalogue_today is not None:
        return dt.date.fromisoformat(config.catalogue_today)
    return dt.datetime.now(dt.UTC).date()


async def _search(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    refused = _gate(request, state, "search", time.monotonic())
    if refused is not None:
        return refused
    config = state.config
    if request.match_info.get("dataset") is None and not config.search_multi:
        return _error(404, "not found")
    try:
        query = parse_query(
            await request.read(),
            request.match_info.get("dataset"),
            max_days=config.search_max_days,
            max_limit=config.search_max_limit,
        )
        answer = run_query(
            query,
            today=_catalogue_today(config),
            seed=config.seed,
            root=f"{request.scheme}://{request.host}",
        )
    except ValueError as exc:
        return _error(400, str(exc))
    state.counters.search_results += len(answer["results"])
    return _json(answer)


async def _result(request: web.Request) -> web.StreamResponse:
    """The redirect target: like a presigned storage URL, it needs no key and has no limit."""
    state = request.app[STATE_KEY]
    now = time.monotonic()
    if request.headers.get("x-api-key") or "api_key" in request.query:
        state.counters.result_requests_with_key += 1
    if state.config.forbidden:
        return _error(403, "forbidden")
    if now < state.config.outage_until:
        return _error(503, "service unavailable")
    if state.chance(state.config.reset_rate):
        state.counters.resets += 1
        return _reset(request)
    task = state.lookup(request.match_info["task_id"], now)
    if task is None or now < task.ready_at or task.error:
        return _error(404, "no such result")
    return await _send_result(request, state, task)


async def _send_result(request: web.Request, state: SimState, task: Task) -> web.StreamResponse:
    """Stream ``task``'s result, applying the body faults."""
    config, counters = state.config, state.counters
    if state.chance(config.json_instead_rate):
        return _json({"status": "done"})
    if state.chance(config.empty_200_rate):
        return web.Response(status=200, body=b"", content_type="application/octet-stream")
    body = result_body(
        task.params,
        image_size=config.image_size,
        big_result_bytes=config.big_result_bytes,
        wrong_format=state.chance(config.wrong_format_rate),
    )
    # Cut strictly inside the body, so the client always gets fewer bytes than promised.
    cut = body.length // 2 if state.chance(config.truncate_rate) else None
    ctype = config.result_content_type or body.content_type
    response = web.StreamResponse(status=200, headers={"Content-Type": ctype})
    response.content_length = body.length
    sent = 0
    try:
        await response.prepare(request)
        for chunk in body.chunks(config.chunk_size):
            piece = chunk if cut is None else chunk[: cut - sent]
            await response.write(piece)
            sent += len(piece)
            counters.bytes_sent += len(piece)
            if cut is not None and sent >= cut:
                counters.truncated += 1
                # close(), not abort(): the partial body is flushed, then FIN, so the client
                # sees a short body rather than a reset.
                if request.transport is not None:
                    request.transport.close()
                return response
            if config.slow_body_seconds > 0:
                await asyncio.sleep(config.slow_body_seconds)
    except ConnectionError:
        return response  # the client went away mid-body: not served
    state.note_result(task, time.monotonic())
    return response


async def _counters(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    # ``now_seconds`` places the counters' times on the caller's clock (how long a client
    # took from its start to its first request, for one).
    return _json({**state.counters_dict(), "now_seconds": state.since_start(time.monotonic())})


async def _tasks(request: web.Request) -> web.Response:
    return _json(request.app[STATE_KEY].tasks_list())


async def _configure(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        changes = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    if not isinstance(changes, dict):
        return _error(400, "body must be a JSON object of setting names and values")
    try:
        apply_changes(state, changes, remote=True)
    except (TypeError, ValueError) as exc:
        return _error(400, str(exc))
    return _json({"ok": True})


async def _reset_counters(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset_counters()
    return _json({"ok": True})


def apply_changes(state: SimState, changes: dict[str, Any], *, remote: bool = False) -> None:
    """Apply knob changes to a running simulator; ``outage_for=s`` starts an s-second outage.

    ``host``/``port`` cannot change while running; ``processing_time_fn`` cannot come over HTTP.
    """
    changes = dict(changes)
    fixed = {"host", "port"} | ({"processing_time_fn"} if remote else set())
    if fixed & set(changes):
        raise ValueError(f"cannot change {', '.join(sorted(fixed & set(changes)))} at runtime")
    if "outage_for" in changes:
        seconds = changes.pop("outage_for")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("outage_for must be a number of seconds >= 0")
        changes["outage_until"] = time.monotonic() + seconds
    state.config.update(**changes)
