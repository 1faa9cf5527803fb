"""Built-in state backend ``json:///DIR``: the seed's ``state_<id>.json``, done properly.

One file per run holding the whole record. Every write goes to a temp file in the same
directory, is fsynced, then renamed over the old file (and the directory fsynced), so a
reader or a crash sees the old record or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from flowsh import hookimpl
from flowsh.errors import NotFoundError, StateError, UsageError
from flowsh.fileio import atomic_write
from flowsh.hookspecs import Register
from flowsh.state import RUNNING, NoSpaceError, RunRecord, StepRecord, ensure_private_dir

FORMAT = "flowsh.run/1"


def _write_record(path: Path, text: str) -> None:
    try:
        atomic_write(path, text)
    except OSError as exc:
        cls = NoSpaceError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StateError
        raise cls(f"{path}: cannot write state: {exc.strerror}; "
                  "the previous record is intact") from None


def _dir_of(url: str) -> Path:
    raw = url.removeprefix("json://")
    raw = raw[1:] if raw.startswith("//") else raw
    return Path(os.path.expanduser(raw))


class JSONBackend:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dir = ensure_private_dir(_dir_of(url))
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise StateError(f"{self.dir}: permission denied (state directory not writable)")

    @staticmethod
    def store_exists(url: str) -> bool:
        """Whether opening `url` would find the directory rather than make it
        (store.open_existing)."""
        return _dir_of(url).is_dir()

    def _path(self, run_id: str) -> Path:
        if "/" in run_id or run_id.startswith("."):
            raise UsageError(f"invalid run id {run_id!r}")
        return self.dir / f"state_{run_id}.json"

    def _write(self, run: RunRecord) -> None:
        data: dict[str, Any] = {"format": FORMAT, **run.to_dict()}
        # The seed's two fields, kept so its restore_state readers still work.
        current = next((s.name for s in run.steps.values() if s.status == RUNNING), None)
        data["step"] = current
        data["data"] = run.params
        _write_record(self._path(run.run_id), json.dumps(data, indent=1, sort_keys=True))

    def _read(self, path: Path) -> RunRecord:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"no run file {path}") from None
        except OSError as exc:  # permission, a directory named like a state file...
            raise StateError(f"{path}: cannot read: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"{path}: corrupt state file ({exc}); left as it is") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateError(f"{path}: not a flowsh state file (no format {FORMAT!r}); "
                             "left as it is")
        try:
            return RunRecord.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise StateError(f"{path}: malformed run record ({exc}); left as it is") from None

    # The engine keeps the live record; each call persists all of it.
    def create_run(self, run: RunRecord) -> None:
        self._write(run)

    def update_run(self, run: RunRecord) -> None:
        self._write(run)

    def save_step(self, run: RunRecord, step: StepRecord) -> None:
        run.steps[step.name] = step
        run.heartbeat = step.ended_at or step.started_at or run.heartbeat
        self._write(run)

    def heartbeat(self, run: RunRecord) -> None:
        self._write(run)

    def load_run(self, run_id: str) -> RunRecord:
        path = self._path(run_id)
        if not path.exists():
            matches = sorted(self.dir.glob(f"state_{run_id}*.json"))
            if len(matches) > 1:
                raise UsageError(f"run id prefix {run_id!r} is ambiguous")
            if not matches:
                raise NotFoundError(f"no run {run_id!r} in {self.url}")
            path = matches[0]
        return self._read(path)

    def list_runs(self, workflow: str | None = None, *, limit: int | None = None,
                  statuses: frozenset[str] | None = None) -> list[RunRecord]:
        runs = []
        for path in self.dir.glob("state_*.json"):
            # A corrupt file is an error, never skipped: `run --resume` would start afresh
            # and `history` would hide a run.
            run = self._read(path)
            if workflow is not None and run.workflow != workflow:
                continue
            if statuses and run.status not in statuses:
                continue
            runs.append(run)
        runs.sort(key=lambda r: r.started_at, reverse=True)
        return runs[:limit] if limit is not None else runs

    def delete_runs(self, run_ids: list[str]) -> int:
        n = 0
        for rid in run_ids:
            try:
                self._path(rid).unlink()
                n += 1
            except FileNotFoundError:
                pass
        return n

    def close(self) -> None:
        pass


@hookimpl
def flowsh_register_state_backends(register: Register) -> None:
    register("json", JSONBackend)
