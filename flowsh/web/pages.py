"""Server-rendered pages (templates/web, with the report's DAG and timeline SVGs).

The buttons are HTML forms carrying the CSRF token, so an action works without script;
web.js only keeps a page live (a run's state, a step's log) over Server-Sent Events.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from flowsh.durations import format_duration
from flowsh.errors import FlowshError, NotFoundError, UsageError
from flowsh.state import FINISHED_RUN, RUNNING, RunRecord, instance_parent
from flowsh.templating import templates_dir
from flowsh.web import actions, data
from flowsh.web.api import query_int
from flowsh.web.config import ServeConfig, secret_matches

STATUSES = ["running", "succeeded", "failed", "interrupted", "crashed"]
RESUMABLE = ("failed", "interrupted", "crashed")


@cache
def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(templates_dir() / "web"),
                                        str(templates_dir() / "report")]),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(fmt=_fmt, when=_when, quote=lambda s: quote(s, safe=""))
    return Jinja2Templates(env=env)


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _cfg(request: Request) -> ServeConfig:
    cfg: ServeConfig = request.app.state.cfg
    return cfg


def _render(request: Request, name: str, http_status: int = 200, **context: Any) -> Response:
    cfg = _cfg(request)
    return templates().TemplateResponse(request, name, {
        "csrf": cfg.csrf_token, "read_only": cfg.read_only, **context}, status_code=http_status)


def error_page(request: Request, exc: FlowshError) -> Response:
    from flowsh.web.api import error_response

    status = error_response(exc).status_code
    # A missing run (a link to a pruned child run) is not found, not refused.
    return _render(request, "error.html.j2", status, message=str(exc), code=exc.exit_code,
                   heading="Not found" if status == 404 else "Refused")


def not_found(request: Request) -> Response:
    return _render(request, "error.html.j2", 404, message=f"no page {request.url.path}",
                   code=4, heading="Not found")


def dashboard(request: Request) -> Response:
    cfg = _cfg(request)
    found = data.workflows(cfg.state, cfg.known)
    return _render(request, "dashboard.html.j2", workflows=found, errors=cfg.known.errors)


def dashboard_cards(request: Request) -> Response:
    """The dashboard's status blocks alone: web.js swaps them in when a run starts or ends
    (the forms around them, maybe half filled in, stay as they are)."""
    cfg = _cfg(request)
    return _render(request, "wf_cards.html.j2", workflows=data.workflows(cfg.state, cfg.known))


def history(request: Request) -> Response:
    cfg = _cfg(request)
    workflow = request.query_params.get("workflow") or None
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise UsageError(f"status={status!r}: use one of {', '.join(STATUSES)}")
    limit = query_int(request, "limit", 50, 1, 500)
    page = data.runs_page(cfg.state, workflow, status, limit,
                          query_int(request, "offset", 0, 0, 2**31 - 1))
    with data.backend(cfg.state) as b:
        names = data.workflow_names(b)

    def link(offset: int) -> str:
        query = {"workflow": workflow, "status": status, "limit": limit, "offset": offset}
        return "/runs?" + urlencode({k: v for k, v in query.items() if v not in (None, "")})

    return _render(request, "history.html.j2", page=page, names=names, workflow=workflow,
                   status=status, statuses=STATUSES, link=link)


def graph_context(run: RunRecord) -> dict[str, Any]:
    """The report's DAG and timeline geometry for a run (flowsh/report.py)."""
    from flowsh.monitorfiles import events_path, read_events
    from flowsh.report import ReportStep, dag_layout, gantt_layout, segments_from_events

    wf = data.load_workflow_quietly(run.file)
    names = data.step_order(run)
    own = [n for n in names if instance_parent(n) is None]
    needs = None
    if wf is not None and {s.name for s in wf.steps} == set(own):
        needs = {s.name: list(s.needs or ()) for s in wf.steps}
    exact = needs is not None
    if needs is None:  # no file to read dependencies from: file order
        needs = {n: ([own[i - 1]] if i else []) for i, n in enumerate(own)}
    # A foreach step's items hang off it (FOREACH-8).
    needs = {**needs, **{n: [p] for n in names if (p := instance_parent(n)) is not None}}
    events = read_events(events_path(wf), run.run_id)
    steps = []
    for n in names:
        s = ReportStep(n, run.steps[n], needs.get(n, []))
        s.segments = segments_from_events(events, run.steps[n])
        steps.append(s)
    return {"steps": steps, "dag": dag_layout(names, needs) if names else None,
            "dag_exact": exact, "gantt": gantt_layout(run, steps) if names else None}


def run_page(request: Request) -> Response:
    cfg = _cfg(request)
    run = data.load_run(cfg.state, request.path_params["run_id"])
    return _render(request, "run.html.j2", r=run, finished=run.status in FINISHED_RUN,
                   resumable=run.status in RESUMABLE and bool(run.file),
                   running=run.status == RUNNING, **graph_context(run))


def graph_fragment(request: Request) -> Response:
    cfg = _cfg(request)
    run = data.load_run(cfg.state, request.path_params["run_id"])
    return _render(request, "graph.html.j2", r=run, **graph_context(run))


async def _form(request: Request) -> dict[str, str]:
    # The pages post urlencoded forms only: the standard library reads them (Starlette's
    # form parser would add python-multipart for nothing).
    from urllib.parse import parse_qsl

    body = (await request.body()).decode("utf-8", errors="replace")
    fields = dict(parse_qsl(body, keep_blank_values=True))
    if not secret_matches(fields.get("csrf"), _cfg(request).csrf_token):
        raise UsageError("this form is stale or not from this server (CSRF token): "
                         "reload the page and try again")
    return fields


async def start(request: Request) -> Response:
    cfg = _cfg(request)
    fields = await _form(request)
    # Empty fields are params left at their defaults, as a command line would leave them.
    params = {k[6:]: v for k, v in fields.items() if k.startswith("param:") and v != ""}
    out = await run_in_threadpool(actions.start, cfg.state, cfg.known,
                                  request.path_params["name"], params)
    return RedirectResponse(f"/runs/{quote(out['run_id'])}", 303)


async def resume(request: Request) -> Response:
    cfg = _cfg(request)
    await _form(request)
    out = await run_in_threadpool(actions.resume, cfg.state, cfg.known,
                                  request.path_params["run_id"])
    return RedirectResponse(f"/runs/{quote(out['run_id'])}", 303)


async def retry(request: Request) -> Response:
    cfg = _cfg(request)
    fields = await _form(request)
    step = fields.get("step")
    if not step:
        raise UsageError("say which step to retry")
    out = await run_in_threadpool(actions.retry, cfg.state, cfg.known,
                                  request.path_params["run_id"],
                                  step, fields.get("downstream") == "on")
    return RedirectResponse(f"/runs/{quote(out['run_id'])}", 303)


async def interrupt(request: Request) -> Response:
    cfg = _cfg(request)
    await _form(request)
    out = await run_in_threadpool(actions.interrupt, cfg.state, request.path_params["run_id"])
    return RedirectResponse(f"/runs/{quote(out['run_id'])}", 303)


STATIC = {"web.css": "text/css", "web.js": "text/javascript", "report.css": "text/css"}


def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:  # a fixed list: nothing in the URL becomes a path
        raise NotFoundError(f"no static file {name!r}")
    folder = "report" if name == "report.css" else "web"
    path = templates_dir() / folder / (name + ".j2" if name == "report.css" else name)
    return FileResponse(path, media_type=STATIC[name],
                        headers={"cache-control": "no-cache"})


ROUTES = [
    Route("/", dashboard),
    Route("/dashboard/cards", dashboard_cards),
    Route("/runs", history),
    Route("/runs/{run_id}", run_page),
    Route("/runs/{run_id}/graph", graph_fragment),
    Route("/workflows/{name}/start", start, methods=["POST"]),
    Route("/runs/{run_id}/resume", resume, methods=["POST"]),
    Route("/runs/{run_id}/retry", retry, methods=["POST"]),
    Route("/runs/{run_id}/interrupt", interrupt, methods=["POST"]),
    Route("/static/{name}", static),
]
