"""Command-line values converted without pydantic when they are plainly valid.

typer 0.29 converts every parameter of the invoked command through a pydantic
``TypeAdapter``, built for each parameter (given or not) at each start. For `flowsh status`
that was 127 ms of its 330 ms: pydantic's import (~75 ms, which `status`, `history` and
`--help` need for nothing else) and a schema build per parameter. Here each parameter whose
type is one flowsh uses (str, int, float, bool, Path and lists of them) gets a converter that
takes the values that are plainly valid (``8`` for an int, any text for a str) and hands
anything else to typer's own adapter, built then: what is accepted, what is refused and
every error message stay typer's.

This leans on typer internals (``_TyperParameter._runtime_param``, ``RuntimeParam``,
``coerce_cli_path``); if a typer release moves them, `install` does nothing and typer
converts as before, only slower.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - a typer without these internals: its own path
    RuntimeParam = None  # type: ignore[assignment,misc]

_INT = re.compile(r"[0-9]{1,18}\Z")
_FLOAT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?\Z")
_MISS = object()  # "not plainly valid: ask typer"


def _plain(annotation: Any, info: Any, value: Any) -> Any:
    """`value` converted to `annotation` when that is unambiguous, else `_MISS`."""
    kind = type(value)
    if annotation is str:
        return value if kind is str else _MISS
    if annotation is bool:
        return value if kind is bool else _MISS
    if annotation is int:
        if kind is str and _INT.match(value):
            value = int(value)
        elif kind is not int:
            return _MISS
        # Out of range: typer words the error.
        if (info.min is not None and value < info.min) or (
                info.max is not None and value > info.max):
            return _MISS
        return value
    if annotation is float:
        if info.min is not None or info.max is not None:
            return _MISS
        if kind is str and _FLOAT.match(value):
            return float(value)
        return float(value) if kind in (int, float) else _MISS
    if annotation is Path:
        if kind is str and value and "\0" not in value:
            return Path(value)  # what pydantic's lax str -> Path does
        return value if isinstance(value, Path) else _MISS
    return _MISS


if RuntimeParam is not None:

    class PlainParam(RuntimeParam):  # type: ignore[misc,valid-type]
        """typer's runtime conversion for one parameter, pydantic only for odd values."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            ann = self.annotation
            if get_origin(ann) is list:  # type: ignore[comparison-overlap]
                if isinstance(value, (list, tuple)):
                    (item,) = get_args(ann)
                    out = [_plain(item, info, v) for v in value]
                    if not any(v is _MISS for v in out):
                        return [self._path(v, param, ctx) if item is Path else v
                                for v in out]
            else:
                got = _plain(ann, info, value)
                if got is not _MISS:
                    return self._path(got, param, ctx) if ann is Path else got
            return build_runtime_param(param.type_descriptor)._coerce_value(
                value, param=param, ctx=ctx)

        def _path(self, value: Path, param: Any, ctx: Any) -> Any:
            # typer's own checks (exists, dir_okay...), given a Path it need not convert.
            return coerce_cli_path(value, self.parameter_info, path_type=Path, param=param,
                                   ctx=ctx)


def _supported(annotation: Any, info: Any) -> bool:
    if get_origin(annotation) is list:
        args = get_args(annotation)
        return len(args) == 1 and _supported(args[0], info)
    if annotation is Path:
        return info.path_type is None and not getattr(info, "resolve_path", False)
    return annotation in (str, int, float, bool)


def install(params: Any) -> None:
    """Give each typer parameter in `params` whose type is a plain one a `PlainParam`."""
    if RuntimeParam is None:
        return
    for param in params:
        desc = getattr(param, "type_descriptor", None)
        if desc is None or getattr(param, "_runtime_param", _MISS) is not None:
            continue  # not typer's, typer changed, or already converted
        info = desc.parameter_info
        if desc.file_annotation is not None or info.parser is not None or info.clamp \
                or not _supported(desc.annotation, info):
            continue
        param._runtime_param = PlainParam(parameter_info=info, annotation=desc.annotation)
