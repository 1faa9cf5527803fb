"""What a run's steps see: its params, environment and secrets, resolved once per run.

docs/semantics.md gives the precedence: env_file < env < params < upstream outputs < the
step's own env, then flowsh's FLOWSH_* variables. Secrets are known from here on: the run's
one masker (`mask`) grows as secret values appear (library state, secret outputs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flowsh import plugins, steplog
from flowsh.errors import UsageError
from flowsh.libstate import LibraryState, key
from flowsh.model import SECRET_NAME, Step, Workflow
from flowsh.outputs import OutputError, parse_outputs
from flowsh.secrets import MASK, Masker, load_secret_outputs, save_secret_outputs
from flowsh.state import RunRecord
from flowsh.steps import base_environment, env_file_values, library_files


def resolve_params(wf: Workflow, given: Mapping[str, str],
                   prior: RunRecord | None) -> dict[str, str]:
    """The run's params: the file's defaults < a resumed run's record < the command line."""
    params = {**wf.params, **(prior.params if prior else {}), **given}
    for k, v in list(params.items()):
        if v != MASK or k in given:
            continue
        # The record keeps no secret: it must come again, from the command line or
        # (said out loud) from the workflow file.
        if k not in wf.params or wf.params[k] == MASK:
            raise UsageError(f"run {prior.run_id if prior else ''} was started with secret "
                             f"parameter {k}, which the state does not keep: pass {k}=... "
                             "again to resume it")
        params[k] = wf.params[k]
        plugins.warn(f"secret parameter {k} is not kept in the state: resuming with the "
                     f"workflow file's value (pass {k}=... to use another)")
    missing = [k for k in wf.required_params if k not in params]
    if missing:
        raise UsageError(f"parameter {', '.join(missing)} needs a value (declared without "
                         f"a default): pass {missing[0]}=VALUE")
    return params


# The slot a run stands for (slot.py, docs/semantics.md SLOT-*), as its steps see it.
SLOT_VAR = "FLOWSH_SCHEDULED_TIME"


class RunEnvironment:
    """Params, the steps' base environment and the secret mask, before anything runs."""

    def __init__(self, wf: Workflow, given: Mapping[str, str], prior: RunRecord | None,
                 mask: Masker | None = None) -> None:
        self.wf = wf
        self.params = resolve_params(wf, given, prior)
        file_env = env_file_values(wf)  # read once: the environment and the names below
        self.env = base_environment(wf, self.params, file_env)
        # What flowsh sets on purpose, which a sourced library must not override.
        # env_file's names too: they outrank a library even when the caller's environment
        # already holds the same value (SOURCE-3).
        self.explicit = {k for k, v in self.env.items() if os.environ.get(k) != v} | \
            set(self.params) | set(wf.env) | set(file_env)
        self.secret_names = wf.secret_names()
        # Everything a step sees: the file's env and params, env_file, and flowsh's own
        # environment (an AWS_SECRET_ACCESS_KEY exported by cron's caller is a secret too).
        fresh = Masker.for_env(self.env, self.secret_names)
        if mask is None:
            self.mask = fresh
        else:  # the executor already holds this one: it must see the new values too
            mask.add(fresh.values)
            self.mask = mask
        # A step's own secret-named env (`env: {DB_PASSWORD: ...}` on one step) too.
        self.mask.add(v for s in wf.steps for k, v in s.env.items() if self.secret(k))
        self.library: dict[str, LibraryState] = {}  # libstate key -> state

    def stand_for(self, slot: str | None) -> None:
        """The slot the steps (and the libraries) see; a run that stands for no slot
        inherits none from whoever started it."""
        if slot:
            self.env[SLOT_VAR] = slot
        else:
            self.env.pop(SLOT_VAR, None)

    def secret(self, name: str) -> bool:
        return name in self.secret_names or SECRET_NAME.search(name) is not None

    def masked_params(self) -> dict[str, str]:
        """The params as the record keeps them."""
        return self.mask.mapping(self.params, self.secret_names)

    def set_library(self, library: dict[str, LibraryState]) -> None:
        """Top-level assignments of the sourced libraries, evaluated once for the run."""
        self.library = library
        for state in library.values():
            self.mask.add(v for k, v in state.values.items() if v and self.secret(k))

    def library_has_secrets(self) -> bool:
        return any(self.secret(k) for st in self.library.values() for k in st.values)

    def for_step(self, step: Step, upstream: Mapping[str, str], *, run_id: str,
                 attempt: int, out_path: Path) -> dict[str, str]:
        """A step's environment: the run's, what its dependencies pass on, its own env,
        then flowsh's variables."""
        env = dict(self.env)
        env.update(upstream)
        env.update(step.env)
        files = library_files(self.wf, step)
        if files:
            env["FLOWSH_LIBRARY_STATE"] = self.library[key(files)].text
        env.update(
            FLOWSH_RUN_ID=run_id,
            FLOWSH_WORKFLOW=self.wf.name,
            FLOWSH_STEP=step.name,
            FLOWSH_ATTEMPT=str(attempt),
            FLOWSH_OUTPUT=str(out_path),
        )
        return env

    def explicit_for(self, step: Step, upstream: Mapping[str, str]) -> set[str]:
        """Names a library sourced by `step` must not override (semantics rule 1)."""
        if not (self.wf.source or step.source):
            return set()
        return self.explicit | set(step.env) | set(upstream)

    def unmask_outputs(self, run_dir: Path, name: str,
                       outputs: dict[str, str]) -> dict[str, str]:
        """A resumed step's secret outputs, from the run's private directory (the store
        keeps only the mask)."""
        kept = load_secret_outputs(run_dir, name)
        real = {k: kept[k] for k, v in outputs.items() if v == MASK and k in kept}
        self.mask.add(real.values())
        return {**outputs, **real}

    def take_outputs(self, run_dir: Path, name: str, *, read: bool,
                     text: str | None = None) -> tuple[dict[str, str], str | None]:
        """A finished step's outputs file: its values (when `read`: the step succeeded)
        or what is wrong with it. Read once and removed: the store keeps them (secret
        values only in the 0600 secret-outputs file, dropped when the run succeeds); the
        step's own file would keep them in clear. `text`: the outputs an executor brought
        back itself (Outcome.outputs, a remote step's), parsed instead of the file."""
        out_file = run_dir / f"{name}.out"
        outputs: dict[str, str] = {}
        bad = None
        found = True  # most steps write no outputs: no file to remove then
        try:
            if text is not None:
                outputs = parse_outputs(text.encode("utf-8", "surrogateescape"))
            else:
                try:
                    raw = out_file.read_bytes()
                except FileNotFoundError:
                    raw, found = b"", False
                outputs = parse_outputs(raw) if raw else {}
        except OutputError as exc:
            bad = self.mask(str(exc))
        if found:
            out_file.unlink(missing_ok=True)
        if not read:
            # A failed step's outputs count for nothing, but a secret-named one it wrote
            # (and perhaps printed) is still a secret: masked in its log and its alerts.
            self._learn(run_dir, name, outputs)
            return {}, None
        return outputs, bad

    def _learn(self, run_dir: Path, name: str, outputs: Mapping[str, str]) -> dict[str, str]:
        secret = {k: v for k, v in outputs.items() if self.secret(k)}
        if secret:
            self.mask.add(secret.values())
            # The step may have printed them before they were known to be secret.
            steplog.remask(run_dir / f"{name}.log", self.mask)
        return secret

    def keep_outputs(self, run_dir: Path, name: str, outputs: dict[str, str]) -> dict[str, str]:
        """The outputs as the record keeps them. Secret-named ones are masked from now on
        wherever they show up; steps downstream get the real values."""
        if not outputs:
            return {}
        secret = self._learn(run_dir, name, outputs)
        if secret:
            save_secret_outputs(run_dir, name, secret)
        return self.mask.mapping(outputs, self.secret_names)
