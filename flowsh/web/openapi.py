"""The OpenAPI 3 document of `/api/v1`, written by hand: Starlette generates none, and a
document written next to the handlers says what clients may rely on. tests/test_web_api.py
holds the API to it with schemathesis."""

from __future__ import annotations

from typing import Any

from flowsh import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "Bad request (a parameter out of range).",
             401: "No valid token (every request needs one: GET /?token=TOKEN once, or Bearer).",
             403: "Refused: --read-only, or the CSRF token is missing or wrong.",
             404: "No such run, step or workflow.",
             409: "The run is still running, or its workflow's lock is held.",
             422: "The workflow or its params are invalid; `error` is the CLI's message.",
             503: "The state store cannot be read or written."}
    return {str(c): _json("Error", words[c]) for c in codes}


_NUM = {"type": ["number", "null"]}
_STR = {"type": ["string", "null"]}
_INT = {"type": ["integer", "null"]}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "Run id, or a unique prefix of one."}
_STEP = {"name": "step", "in": "path", "required": True, "schema": {"type": "string"}}
_SSE = {"description": "Server-Sent Events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_CSRF: list[dict[str, list[str]]] = [{"csrf": []}]
_READ = ("401", "503")

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "exit_code"], "properties": {
        "error": {"type": "string"},
        "exit_code": {"type": "integer", "description": "What the CLI would exit with."}}},
    "Params": {"type": "object", "additionalProperties": {"type": "string"}},
    "RunSummary": {"type": "object", "required": [
        "run_id", "workflow", "status", "started_at", "params"], "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": "string"}, "file": _STR,
        "status": {"type": "string", "enum": [
            "running", "succeeded", "failed", "interrupted", "crashed"]},
        "exit_code": _INT, "started_at": {"type": "number"}, "ended_at": _NUM,
        "duration": _NUM, "params": _ref("Params"), "host": _STR, "pid": _INT,
        "resumed_from": _STR,
        "parent_run": {**_STR, "description": "The run whose `call:` step started this one."},
        "parent_step": _STR}},
    "Attempt": {"type": "object", "required": ["attempt", "start", "end", "status"],
                "properties": {"attempt": {"type": "integer"}, "start": {"type": "number"},
                               "end": {"type": "number"}, "status": {"type": "string"}}},
    "Step": {"type": "object", "required": ["name", "status", "attempts"], "properties": {
        "name": {"type": "string"}, "status": {"type": "string"},
        "attempts": {"type": "integer"}, "exit_code": _INT, "signal": _INT,
        "started_at": _NUM, "ended_at": _NUM, "duration": _NUM, "message": _STR,
        "needs": {"type": "array", "items": {"type": "string"}},
        "has_log": {"type": "boolean"},
        "child_run": {**_STR, "description": "A `call:` step's child run."},
        "attempt_spans": {"type": "array", "items": _ref("Attempt")}}},
    "Run": {"allOf": [_ref("RunSummary"), {"type": "object", "required": ["steps"],
            "properties": {"steps": {"type": "array", "items": _ref("Step")}}}]},
    "RunPage": {"type": "object", "required": ["runs", "limit", "offset", "next_offset"],
                "properties": {"runs": {"type": "array", "items": _ref("RunSummary")},
                               "limit": {"type": "integer"}, "offset": {"type": "integer"},
                               "next_offset": _INT}},
    "Workflow": {"type": "object", "required": ["name", "startable", "schedule"],
                 "properties": {
        "name": {"type": "string", "description": "Identity, as runs record it."},
        "title": {"type": "string"}, "file": _STR, "startable": {"type": "boolean"},
        "schedule": {"type": "array", "items": {"type": "string"}},
        "next_run": _NUM, "last_status": _STR, "last_run": _STR, "last_started": _NUM,
        "last_duration": _NUM, "success_rate": _NUM,
        "trend": {"type": "array", "items": {"type": "object", "properties": {
            "run_id": {"type": "string"}, "status": {"type": "string"},
            "duration": _NUM}}},
        "params": _ref("Params"),
        "required_params": {"type": "array", "items": {"type": "string"}}}},
    "WorkflowList": {"type": "object", "required": ["workflows"], "properties": {
        "workflows": {"type": "array", "items": _ref("Workflow")},
        "errors": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Files under --workflows that do not load, and why."}}},
    "StartRequest": {"type": "object", "required": ["workflow"], "properties": {
        "workflow": {"type": "string", "minLength": 1}, "params": _ref("Params")}},
    "RetryRequest": {"type": "object", "required": ["step"], "properties": {
        "step": {"type": "string", "minLength": 1},
        "downstream": {"type": "boolean", "default": False}}},
    "Action": {"type": "object", "required": ["run_id"], "properties": {
        "run_id": {"type": "string"}, "workflow": {"type": "string"}, "pid": {"type": "integer"},
        "signal": {"type": "string"}}},
    "LogTail": {"type": "object", "required": ["run_id", "step", "lines", "truncated"],
                "properties": {
        "run_id": {"type": "string"}, "step": {"type": "string"}, "status": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "string"}},
        "truncated": {"type": "boolean"}, "size": {"type": "integer"}}},
    "Session": {"type": "object", "required": ["csrf_token", "read_only"], "properties": {
        "csrf_token": {"type": "string"}, "read_only": {"type": "boolean"}}},
}


def _get(summary: str, ok: dict[str, Any], *extra: int,
         params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"summary": summary, "parameters": params or [],
            "responses": {"200": ok, **_errors(*sorted({401, 503, *extra}))}}


def _post(summary: str, body: str | None, *, params: list[dict[str, Any]],
          codes: tuple[int, ...]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary, "parameters": params, "security": _CSRF,
        "responses": {"202": _json("Action", "Started; follow it at /api/v1/runs/{run_id}."),
                      **_errors(*sorted({400, 401, 403, 503, *codes}))}}
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/session": {"get": _get("This server's CSRF token and mode.",
                                        _json("Session", "The session."))},
        "/api/v1/workflows": {"get": _get(
            "Workflows from --workflows and from history, with status and success rate.",
            _json("WorkflowList", "Workflows by identity."))},
        "/api/v1/runs": {
            "get": _get("Runs, newest first, filtered and paginated.",
                        _json("RunPage", "One page of runs."), 400, params=[
                _query("workflow", {"type": "string"}, "Only this workflow (identity)."),
                _query("status", {"type": "string", "enum": [
                    "running", "succeeded", "failed", "interrupted", "crashed"]},
                    "Only this status."),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500,
                                 "default": 50}, "Page size."),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1,
                                  "default": 0},
                       "Runs to skip.")]),
            "post": _post("Start a run, validated as `flowsh run` validates it.",
                          "StartRequest", params=[], codes=(404, 409, 422)),
        },
        "/api/v1/runs/{run_id}": {"get": _get(
            "One run with its steps and their attempts.", _json("Run", "The run."), 404, 422,
            params=[_RUN_ID])},
        "/api/v1/workflows/events": {"get": _get(
            "Every workflow's summary (as GET /api/v1/workflows), in a `workflows` event at "
            "once and again each time a run starts or ends.", _SSE)},
        "/api/v1/runs/{run_id}/events": {"get": _get(
            "The run's state: a `run` event (JSON) at each change; open while watched.", _SSE, 404,
            422, params=[_RUN_ID])},
        "/api/v1/runs/{run_id}/steps/{step}/log": {"get": _get(
            "The last lines of a step's log, secrets masked.", _json("LogTail", "Log tail."),
            400, 404, 422, params=[_RUN_ID, _STEP, _query(
                "lines", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 200},
                "How many lines.")])},
        "/api/v1/runs/{run_id}/steps/{step}/log/stream": {"get": _get(
            "The step's log as it is written: `log` events (of what is already written, "
            "the last MiB at most, after a `skip` event), then one `end`.", _SSE, 400, 404,
            422, params=[_RUN_ID, _STEP, _query("offset", {"type": "integer", "minimum": 0,
                                                           "default": 0},
                                                "Byte offset to start from.")])},
        "/api/v1/runs/{run_id}/resume": {"post": _post(
            "Resume a failed, interrupted or crashed run (`flowsh resume`).", None,
            params=[_RUN_ID], codes=(404, 409, 422))},
        "/api/v1/runs/{run_id}/retry": {"post": _post(
            "Run a step again, with --downstream what follows it (`flowsh retry`).",
            "RetryRequest", params=[_RUN_ID], codes=(404, 409, 422))},
        "/api/v1/runs/{run_id}/interrupt": {"post": _post(
            "Stop a running run as Ctrl-C does: SIGTERM to its runner.", None,
            params=[_RUN_ID], codes=(404, 422))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "flowsh", "version": __version__,
                 "description": "Runs, steps and logs of flowsh workflows; see docs/ui.md."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                     "description": "From GET /api/v1/session or the page's meta tag."},
            "token": {"type": "http", "scheme": "bearer",
                      "description": "--token-file, FLOWSH_UI_TOKEN, or the one "
                                     "`flowsh serve` made ($FLOWSH_HOME/ui-token)."}}},
    }
