"""flowsh.http: post_json against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import time

import pytest

from flowsh.http import post_json, url_for_errors

from .loopback import serve


def test_posts_json_with_headers() -> None:
    with serve([201]) as srv:
        assert post_json(srv.url + "/hook", {"a": [1, "é"]}, headers={"X-Key": "k"}) == 201
    (req,) = srv.requests
    assert req.path == "/hook" and json.loads(req.body) == {"a": [1, "é"]}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("flowsh/") and req.headers["X-Key"] == "k"


def test_5xx_retried_then_success() -> None:
    with serve([503, 500, 200]) as srv:
        assert post_json(srv.url, {}, retries=2, retry_delay=0.05) == 200
    assert len(srv.requests) == 3


def test_4xx_not_retried_and_secret_path_hidden() -> None:
    with serve([404]) as srv, pytest.raises(RuntimeError) as exc:
        post_json(srv.url + "/T000/SECRET-TOKEN", {}, retries=3, retry_delay=0.05)
    assert len(srv.requests) == 1
    assert "answered 404" in str(exc.value) and "SECRET-TOKEN" not in str(exc.value)


def test_retries_exhausted() -> None:
    with serve([502]) as srv, pytest.raises(RuntimeError, match="answered 502"):
        post_json(srv.url + "/s3cret", {}, retries=1, retry_delay=0.05)
    assert len(srv.requests) == 2


def test_connection_refused_names_host_only() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(RuntimeError) as exc:
        post_json(f"http://127.0.0.1:{port}/s3cret", {}, retries=1, retry_delay=0.05)
    assert f"http://127.0.0.1:{port}/..." in str(exc.value) and "s3cret" not in str(exc.value)


def test_timeout_bounds_the_whole_post() -> None:
    with serve([200], hang=True) as srv:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError):
            post_json(srv.url, {}, timeout=0.5, retries=5, retry_delay=0.2)
        assert time.monotonic() - t0 < 5


def test_url_for_errors() -> None:
    assert url_for_errors("https://hooks.slack.com/services/T/B/XYZ?x=1") == "https://hooks.slack.com/..."
    assert url_for_errors("http://h:8080/p#frag") == "http://h:8080/..."


def test_url_for_errors_hides_credentials() -> None:
    shown = url_for_errors("https://user:s3cret@example.com:8443/hook")
    assert "s3cret" not in shown and "example.com:8443" in shown


def test_post_json_error_hides_credentials() -> None:
    with serve([403]) as srv, pytest.raises(RuntimeError) as exc:
        post_json(srv.url.replace("http://", "http://user:s3cret@") + "/x", {}, retries=0)
    assert "s3cret" not in str(exc.value)
