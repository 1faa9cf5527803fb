"""`flowsh config`: merged settings and the origin of each, with the documented precedence."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_config_shows_values_and_origins(write_flow: Callable[..., Path], home: Path,
                                         cli: Cli) -> None:
    cfg = home / "config" / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("defaults: {retries: 2, timeout: 1h}\nstate: json:///tmp/x\n"
                   "notify: {channels: {ops: {type: log}}}\n")
    path = write_flow("defaults: {timeout: 5m}\nsteps: [{name: a, run: 'true'}]\n")
    data = json.loads(cli("config", str(path), "--json").stdout)
    assert data["defaults.retries"] == {"value": 2, "from": str(cfg)}
    assert data["defaults.timeout"] == {"value": "5m", "from": str(path)}  # the file wins
    assert data["defaults.backoff"]["from"] == "default"
    assert data["state"] == {"value": "json:///tmp/x", "from": str(cfg)}
    assert data["notify.channels.ops"] == {"value": "log", "from": str(cfg)}
    env = cli("config", "--json", env={"FLOWSH_STATE": "sqlite:///tmp/y.db"})
    assert json.loads(env.stdout)["state"] == {"value": "sqlite:///tmp/y.db",
                                               "from": "FLOWSH_STATE"}


def test_config_defaults_apply_to_runs(write_flow: Callable[..., Path], home: Path,
                                       tmp_path: Path, cli: Cli) -> None:
    cfg = home / "config" / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("defaults: {retries: 2, retry_delay: 0}\n")
    path = write_flow("steps: [{name: a, run: 'echo x >> tries; exit 1'}]\n")
    assert cli("run", "-q", str(path)).returncode == 1
    assert len((tmp_path / "tries").read_text().splitlines()) == 3


def test_bad_config_file_is_one_line_with_position(write_flow: Callable[..., Path], home: Path,
                                                   cli: Cli) -> None:
    cfg = home / "config" / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("defaults:\n  retrys: 2\n")
    path = write_flow("steps: [{name: a, run: 'true'}]\n")
    res = cli("run", str(path))
    assert res.returncode == 2
    assert res.stderr.startswith(f"flowsh: error: {cfg}:2:3:") and "retries" in res.stderr


def test_config_shows_each_pool_with_the_smaller_size_and_its_origin(
        write_flow: Callable[..., Path], home: Path, cli: Cli) -> None:
    cfg = home / "config" / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("pools: {db: 2, api: 5}\n")
    path = write_flow("pools: {db: 1, api: 9, x: 3}\nsteps: [{name: a, run: 'true'}]\n")
    data = json.loads(cli("config", str(path), "--json").stdout)
    assert data["pools.db"] == {"value": 1, "from": str(path)}
    assert data["pools.api"] == {"value": 5, "from": str(cfg)}
    assert data["pools.x"] == {"value": 3, "from": str(path)}


def test_a_bad_pool_in_the_config_is_one_line_with_position(
        write_flow: Callable[..., Path], home: Path, cli: Cli) -> None:
    cfg = home / "config" / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("pools:\n  db: 0\n")
    path = write_flow("steps: [{name: a, pool: db, run: 'true'}]\n")
    res = cli("validate", str(path))
    assert res.returncode == 2
    assert f"{cfg}:2:7: key 'pools.db'" in res.stderr, res.stderr
    assert "greater than or equal to 1" in res.stderr
