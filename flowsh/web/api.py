"""The REST API under /api/v1 (documented in openapi.py), and /metrics."""

from __future__ import annotations

import json
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from flowsh.errors import FlowshError, LockHeldError, NotFoundError, StateError, UsageError
from flowsh.state import FINISHED_RUN
from flowsh.web import actions, data, openapi
from flowsh.web.config import ServeConfig
from flowsh.web.sse import follow_log, snapshot

PING = 10  # SSE keep-alive comments, so proxies and browsers keep the stream open


class BadRequest(UsageError):
    """A query parameter or body the API cannot take (400, not the CLI's 422)."""


def error_response(exc: FlowshError) -> JSONResponse:
    if isinstance(exc, BadRequest):
        status = 400
    elif isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, LockHeldError):
        status = 409
    elif isinstance(exc, StateError):
        status = 503
    else:
        status = 422
    hint = f" ({exc.hint})" if exc.hint else ""
    return JSONResponse({"error": f"{exc}{hint}", "exit_code": exc.exit_code}, status)


def _cfg(request: Request) -> ServeConfig:
    cfg: ServeConfig = request.app.state.cfg
    return cfg


def query_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r}: not a whole number") from None
    if value < low or (high is not None and value > high):
        top = f" and {high}" if high is not None else " or more"
        raise BadRequest(f"{name}={value}: must be between {low}{top}" if high is not None
                         else f"{name}={value}: must be {low}{top}")
    return value


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested past the stack
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def session(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    return JSONResponse({"csrf_token": cfg.csrf_token, "read_only": cfg.read_only})


def workflows(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    found = data.workflows(cfg.state, cfg.known)
    return JSONResponse({"workflows": found, "errors": cfg.known.errors})


def runs(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    status = request.query_params.get("status")
    if status is not None and status not in FINISHED_RUN | {"running"}:
        raise BadRequest(f"status={status!r}: use running, succeeded, failed, interrupted "
                         "or crashed")
    page = data.runs_page(cfg.state, request.query_params.get("workflow"), status,
                          query_int(request, "limit", 50, 1, 500),
                          query_int(request, "offset", 0, 0, 2**31 - 1))
    return JSONResponse(page)


def run(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    found = data.load_run(cfg.state, request.path_params["run_id"])
    return JSONResponse(data.run_detail(found))


def log(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    lines = query_int(request, "lines", 200, 1, data.LOG_TAIL_MAX)
    found = data.load_run(cfg.state, request.path_params["run_id"])
    return JSONResponse(data.log_tail(found, request.path_params["step"], lines))


async def run_events(request: Request) -> Response:
    cfg = _cfg(request)
    # Unknown ids are a 404 before the stream starts, not an error inside it.
    await run_in_threadpool(snapshot, cfg.state, request.path_params["run_id"])
    return EventSourceResponse(cfg.hub.follow(request.path_params["run_id"]), ping=PING)


async def workflow_events(request: Request) -> Response:
    cfg = _cfg(request)
    return EventSourceResponse(cfg.hub.follow_workflows(cfg.known), ping=PING)


MAX_OFFSET = 2**62


async def log_stream(request: Request) -> Response:
    cfg = _cfg(request)
    # Past 2**62 no file reaches: bounded, so a seek never overflows (a dead stream).
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    # A browser reconnecting (server restarted, network blip) says where it was: each
    # `log` event's id is its end offset, so nothing is sent twice.
    last = request.headers.get("last-event-id", "")
    if last.isdigit() and len(last) < 19:
        offset = int(last)
    run_id, step = request.path_params["run_id"], request.path_params["step"]
    found = await run_in_threadpool(data.load_run, cfg.state, run_id)
    data.log_path(found, step)  # 404 for an unknown step
    return EventSourceResponse(follow_log(cfg.state, found.run_id, step, offset), ping=PING)


async def runs_or_start(request: Request) -> JSONResponse:
    # One route for both methods: a 405 then lists both in its Allow header.
    if request.method == "POST":
        return await start(request)
    return await run_in_threadpool(runs, request)


async def start(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    body = await _body(request)
    workflow, params = body.get("workflow"), body.get("params") or {}
    if not isinstance(workflow, str) or not workflow:
        raise BadRequest("'workflow' must be a workflow's name (as /api/v1/workflows lists it)")
    if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise BadRequest("'params' must be an object of strings")
    out = await run_in_threadpool(actions.start, cfg.state, cfg.known, workflow, params)
    return JSONResponse(out, 202)


async def resume(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    out = await run_in_threadpool(actions.resume, cfg.state, cfg.known,
                                  request.path_params["run_id"])
    return JSONResponse(out, 202)


async def retry(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    body = await _body(request)
    step, downstream = body.get("step"), body.get("downstream", False)
    if not isinstance(step, str) or not step or not isinstance(downstream, bool):
        raise BadRequest("'step' must be a step name and 'downstream' true or false")
    out = await run_in_threadpool(actions.retry, cfg.state, cfg.known,
                                  request.path_params["run_id"],
                                  step, downstream)
    return JSONResponse(out, 202)


async def interrupt(request: Request) -> JSONResponse:
    cfg = _cfg(request)
    out = await run_in_threadpool(actions.interrupt, cfg.state, request.path_params["run_id"])
    return JSONResponse(out, 202)


def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi.document())


def metrics(request: Request) -> PlainTextResponse:
    """The Prometheus metrics of each workflow's last finished run, as the textfile
    collector would get them (flowsh/builtin/metrics_prometheus.py), in one exposition."""
    from flowsh.builtin.metrics_prometheus import render

    cfg = _cfg(request)
    families: dict[str, list[str]] = {}
    with data.backend(cfg.state) as b:
        for name in data.workflow_names(b):
            last = b.list_runs(name, limit=1, statuses=FINISHED_RUN)
            if not last:
                continue
            ok = b.list_runs(name, limit=1, statuses=frozenset({"succeeded"}))
            text = render(b.load_run(last[0].run_id), ok[0].ended_at if ok else None)
            current = ""
            for line in text.splitlines():
                if line.startswith("# HELP "):
                    current = line.split()[2]
                families.setdefault(current, []).append(line)
    out: list[str] = []
    for lines in families.values():
        seen: set[str] = set()
        for line in lines:  # one HELP and TYPE per family, whatever the workflows
            if line.startswith("#") and line in seen:
                continue
            seen.add(line)
            out.append(line)
    return PlainTextResponse("\n".join(out) + "\n" if out else "",
                             media_type="text/plain; version=0.0.4")


ROUTES = [
    Route("/api/v1/openapi.json", openapi_json),
    Route("/api/v1/session", session),
    Route("/api/v1/workflows", workflows),
    Route("/api/v1/workflows/events", workflow_events),
    Route("/api/v1/runs", runs_or_start, methods=["GET", "POST"]),
    Route("/api/v1/runs/{run_id}", run),
    Route("/api/v1/runs/{run_id}/events", run_events),
    Route("/api/v1/runs/{run_id}/steps/{step}/log", log),
    Route("/api/v1/runs/{run_id}/steps/{step}/log/stream", log_stream),
    Route("/api/v1/runs/{run_id}/resume", resume, methods=["POST"]),
    Route("/api/v1/runs/{run_id}/retry", retry, methods=["POST"]),
    Route("/api/v1/runs/{run_id}/interrupt", interrupt, methods=["POST"]),
    Route("/metrics", metrics),
]
