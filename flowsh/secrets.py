"""Masking secret values in everything flowsh writes or shows (logs, state, alerts)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from flowsh.model import SECRET_NAME

MASK = "***"
# Shorter values would mask ordinary words ("1", "on") all over the logs.
_MIN_LEN = 4


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
        new = {v for v in values if len(v) >= _MIN_LEN and v not in known}
        if not new:
            return
        self.values = sorted(known | new, key=len, reverse=True)
        self._re = re.compile("|".join(re.escape(v) for v in self.values))

    def __bool__(self) -> bool:
        return self._re is not None

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
