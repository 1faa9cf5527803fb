"""Masking secret values in everything flowsh writes or shows (logs, state, alerts)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh.envfile import read_env_file
from flowsh.errors import StateError
from flowsh.fileio import atomic_write

if TYPE_CHECKING:
    from flowsh.model import Workflow

# Names whose values are masked everywhere flowsh writes or shows them.
# Also any name ending in KEY as a word (SSH_KEY, MASTER_KEY): SECRET-1 says `*_KEY`. The
# exported script uses the same pattern (bash ERE, on the upper-cased name). Defined here,
# not in flowsh.model, so masking (and `status`, through the state backends) does not
# import pydantic: ~70 ms at each start.
SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIALS?|(^|_)KEY$)",
    re.I)

MASK = "***"
# Shorter values would mask ordinary words ("1", "on") all over the logs.
_MIN_LEN = 4


def _pieces(values: Iterable[str]) -> Iterator[str]:
    """Each value, and each line of a multi-line one: output is masked line by line, so a
    two-line private key never appears whole in any line."""
    for v in values:
        yield v
        if "\n" in v:
            for line in v.split("\n"):
                yield line
                yield line.rstrip("\r")


class Masker:
    """Replaces each known secret value with ``***``.

    It can learn more values while a run goes on (a step's secret-named outputs): whoever
    holds it — the executor masking output lines — masks those from then on.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: list[str] = []
        self._re: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        known = set(self.values)
        new = {v for v in _pieces(values) if len(v) >= _MIN_LEN and v not in known}
        if not new:
            return
        self.values = sorted(known | new, key=len, reverse=True)
        self._re = re.compile("|".join(re.escape(v) for v in self.values))

    def __bool__(self) -> bool:
        return self._re is not None

    def cut(self, text: str) -> int:
        """Where a line still growing may be cut and its head masked on its own: no known
        value is split there, and none can start before it and end in text still to come."""
        if self._re is None:
            return len(text)
        cut = max(0, len(text) - (len(self.values[0]) - 1))
        for m in self._re.finditer(text):
            if m.start() < cut < m.end():
                return m.start()  # matches do not overlap: no earlier one spans it
        return cut

    def __call__(self, text: str) -> str:
        if self._re is None or not text:
            return text
        return self._re.sub(MASK, text)

    def mapping(self, data: Mapping[str, str], names: set[str] | None = None) -> dict[str, str]:
        """A copy with secret-named keys and secret values masked."""
        out = {}
        for k, v in data.items():
            if (names is not None and k in names) or SECRET_NAME.search(k):
                out[k] = MASK if v else v
            else:
                out[k] = self(v)
        return out

    @classmethod
    def for_env(cls, env: Mapping[str, str], names: set[str]) -> Masker:
        """Secrets are the values of `names` plus of any variable whose name looks secret."""
        values = [v for k, v in env.items() if k in names or SECRET_NAME.search(k)]
        return cls(values)

    @classmethod
    def for_workflow(cls, wf: Workflow | None) -> Masker:
        """What can be known without running: this process's environment, the file's
        env_file, params and env. A run masks with the engine's own (`RunContext.masker`),
        which also knows the run's params and its steps' secret outputs."""
        env: dict[str, str] = dict(os.environ)
        if wf is None:
            return cls.for_env(env, set())
        if wf.env_file:
            # Imported here: loader brings PyYAML, which commands that only mask never need.
            base = Path(wf.path).parent if wf.path else Path.cwd()
            # A bad env_file is reported where it matters (the run); masking must not fail.
            with contextlib.suppress(Exception):
                env.update(read_env_file(base / wf.env_file))
        env.update(wf.params)
        env.update(wf.env)
        return cls.for_env(env, wf.secret_names())


def url_without_password(url: str) -> str:
    """A URL as flowsh shows or passes it on: `scheme://user:PASSWORD@host` loses the
    password, as does a `password=` parameter (the `--state …` a failed run prints must
    stay pasteable without carrying the database password; ~/.pgpass supplies it)."""
    url = re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1@", url, flags=re.I)
    stripped = re.sub(r"([?&])password=[^&]*(&|$)", r"\1", url, flags=re.I)
    return stripped.rstrip("?&") if stripped != url else url


# Secret outputs of a run's steps: the store keeps `***`, a resume needs the value. They
# live in one 0600 file per step in the run's 0700 private directory on the runner's host,
# removed when the run succeeds (nothing left to resume) or is pruned (with the directory).
def _secret_file(run_dir: Path, step: str) -> Path:
    return run_dir / f"{step}.secret-outputs.json"


def save_secret_outputs(run_dir: Path, step: str, values: Mapping[str, str]) -> None:
    path = _secret_file(run_dir, step)
    if not values:
        path.unlink(missing_ok=True)
        return
    try:
        atomic_write(path, json.dumps(dict(values)), mode=0o600)
    except OSError as exc:
        raise StateError(f"{path}: cannot keep the step's secret outputs for a resume: "
                         f"{exc.strerror}") from None


def load_secret_outputs(run_dir: Path, step: str) -> dict[str, str]:
    try:
        data = json.loads(_secret_file(run_dir, step).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # gone (another host, pruned): the caller warns about what stays masked
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def drop_secret_outputs(run_dir: Path) -> None:
    for path in run_dir.glob("*.secret-outputs.json"):
        path.unlink(missing_ok=True)
