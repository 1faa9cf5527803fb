"""Steps that know they are up to date (docs/semantics.md, UPTODATE).

A step with `sources:` has a fingerprint: one sha256 per thing that decides what it does,
kept flat in its record (`StepRecord.hashes`), keyed by kind:

* ``cmd``          its command text (run text and shell; or script path, contents, args)
* ``fn:NAME``      the body (``declare -f``) of each library function it calls, directly or
                   through another called function (a word of its text naming a function)
* ``var:NAME``     each param, workflow/step env and env_file value that reaches it
* ``out:NAME``     each output its dependencies hand it (a secret's, var: or out:, is an
                   HMAC under the FLOWSH_HOME's key, flowsh/fpkey.py: a plain hash of a
                   PIN is the PIN to whoever reads `flowsh status --json`)
* ``src:PATH``     each file its `sources:` globs match (relative to its workdir)
* ``gen:PATH``     each file its `generates:` globs matched when it succeeded

All values are hashed (a secret's value never reaches the store). The step is up to date
when every entry but ``gen:`` equals its last success's and every ``gen:`` file still has
the hash that success left. The inherited process environment (HOME, PWD...) is not part
of it: it differs between a terminal and cron and would make no step ever up to date.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flowsh.bashglob import Stopped, match_files
from flowsh.bashlib import STATE_EVAL, source_script
from flowsh.fpkey import existing_key, fingerprint_key, keyed
from flowsh.model import SECRET_NAME, Step, Workflow
from flowsh.paths import resolve_path, step_cwd
from flowsh.secrets import MASK
from flowsh.state import SKIPPED, SUCCEEDED, SkipReason, StateBackend, StepRecord, flowsh_home
from flowsh.steps import library_files

# The characters a function name may hold (bashlib._WORD); anything else separates words.
# The exported script splits the same way (`tr -cs 'A-Za-z0-9_:.-' '\n'`).
_WORDS = re.compile(r"[A-Za-z0-9_:.-]+")
# How many of the workflow's runs are read back to find a step's last success.
HISTORY_LIMIT = 1000
# A secret's entry when there is no fingerprint key to hash it with (Tracker.make_key).
NO_KEY = "no-key"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _never() -> bool:
    return False


def sha256_file(path: Path, stopped: Callable[[], bool] = _never) -> str | None:
    """The file's sha256 (None: unreadable); Stopped when `stopped()` turns true meanwhile
    (a signal must not wait for a huge file to be read to its end)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                if stopped():
                    raise Stopped
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def file_hashes(prefix: str, patterns: Iterable[str], cwd: Path,
                stopped: Callable[[], bool] = _never) -> dict[str, str]:
    out: dict[str, str] = {}
    for rel in match_files(patterns, cwd, stopped):
        digest = sha256_file(cwd / rel, stopped)
        if digest is not None:
            out[prefix + rel] = digest
    return out


def command_text(wf: Workflow, step: Step) -> str:
    if step.script is not None:
        path = resolve_path(wf, step.script, step_cwd(wf, step))
        contents = sha256_file(path) or "missing"
        return json.dumps(["script", step.script, contents, [str(a) for a in step.args],
                           step.shell or wf.shell])
    return json.dumps(["run", step.run, step.shell or wf.shell])


def parse_functions(text: str) -> dict[str, str]:
    """``declare -f`` output of several functions, each followed by a NUL: name -> body."""
    bodies: dict[str, str] = {}
    for part in text.split("\0"):
        part = part.strip("\n")
        if not part:
            continue
        name = part.split(" ", 1)[0]
        bodies[name] = part
    return bodies


def library_functions(files: list[str], env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Every function `files` define, as bash prints it, read as a step reads them."""
    script = (STATE_EVAL + "\n" + source_script(files, definitions_only=True)
              + 'for __f in $(compgen -A function); do declare -f "$__f"; printf "\\0"; done\n')
    try:
        res = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], env=dict(env),
                             cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_functions(res.stdout.decode(errors="surrogateescape"))


def called(text: str, functions: Mapping[str, str]) -> list[str]:
    """Functions `text` names, and those their bodies name, transitively; sorted."""
    seen: set[str] = set()
    todo = [text]
    while todo:
        for word in set(_WORDS.findall(todo.pop())):
            if word in functions and word not in seen:
                seen.add(word)
                todo.append(functions[word])
    return sorted(seen)


def fingerprint(hashes: Mapping[str, str]) -> str:
    """One hash of the entries that decide whether the step runs (not ``gen:``)."""
    inputs = sorted((k, v) for k, v in hashes.items() if not k.startswith("gen:"))
    return sha256_text(json.dumps(inputs))


@dataclass
class Change:
    kind: str  # command, function, variable, output, file, generated, history
    name: str
    how: str  # added, removed, changed, missing...

    def describe(self) -> str:
        if self.kind == "command":
            return "the command text changed"
        if self.kind == "history":
            return self.how
        if self.kind == "scheduled time":
            # A slot is its own work (UPTODATE-4): a run for no slot, or for another one,
            # runs the step again.
            return f"the scheduled time (FLOWSH_SCHEDULED_TIME) {self.how}"
        what = {"function": "function", "variable": "variable", "output": "upstream output",
                "file": "source file", "generated": "generated file"}[self.kind]
        return f"{what} {self.name} {self.how}"


_KINDS = {"cmd": "command", "fn": "function", "var": "variable", "out": "output",
          "src": "file", "slot": "scheduled time"}


def compare(old: StepRecord | None, now: Mapping[str, str], cwd: Path) -> list[Change]:
    """What differs between the last success `old` and the inputs `now` ([]: up to date)."""
    if old is None or not old.hashes:
        return [Change("history", "", "no successful run with a fingerprint on record")]
    changes: list[Change] = []
    before = {k: v for k, v in old.hashes.items() if not k.startswith("gen:")}
    for key in sorted(before.keys() | now.keys()):
        if before.get(key) == now.get(key):
            continue
        prefix, _, name = key.partition(":")
        how = "added" if key not in before else "removed" if key not in now else "changed"
        changes.append(Change(_KINDS.get(prefix, prefix), name, how))
    for key, digest in sorted(old.hashes.items()):
        if key.startswith("gen:"):
            rel = key[4:]
            current = sha256_file(cwd / rel)
            if current != digest:
                changes.append(Change("generated", rel,
                                      "removed" if current is None else "changed"))
    if any(v == MASK for v in old.outputs.values()):
        changes.append(Change("history", "", "its last success had secret outputs, which "
                                             "are not kept to hand on"))
    return changes


def last_successes(backend: StateBackend, identity: str, names: Iterable[str],
                   skip_run: str | None = None) -> dict[str, StepRecord]:
    """Each named step's newest record that carries a fingerprint: a success, or an
    up-to-date skip (which carries its success's forward)."""
    wanted = set(names)
    found: dict[str, StepRecord] = {}
    if not wanted:
        return found
    for summary in backend.list_runs(identity, limit=HISTORY_LIMIT):
        if summary.run_id == skip_run:
            continue
        run = backend.load_run(summary.run_id)
        for name in list(wanted):
            rec = run.steps.get(name)
            if rec is not None and rec.hashes and carries_success(rec):
                found[name] = rec
                wanted.discard(name)
        if not wanted:
            break
    return found


def carries_success(rec: StepRecord) -> bool:
    return rec.status == SUCCEEDED or (
        rec.status == SKIPPED and rec.skip_reason == SkipReason.UP_TO_DATE)


@dataclass
class Tracker:
    """The engine's side: inputs computed when a step is about to start, compared with its
    last success, recorded when it succeeds."""

    wf: Workflow
    baseline: dict[str, StepRecord]
    var_names: set[str]
    force_all: bool = False
    force: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)
    # True once the run is asked to stop: expanding and hashing then raise Stopped.
    stopped: Callable[[], bool] = _never
    secret_names: set[str] = field(default_factory=set)
    # False for a reader (`flowsh why`): no key is made; without one a secret's entry is
    # NO_KEY, which no recorded hash equals (a run would make a key: the step would run).
    make_key: bool = True
    _functions: dict[str, dict[str, str]] = field(default_factory=dict)

    def inputs(self, step: Step, env: Mapping[str, str],
               upstream: Mapping[str, str]) -> dict[str, str]:
        cwd = step_cwd(self.wf, step)
        text = command_text(self.wf, step)
        hashes = {"cmd": sha256_text(text)}
        # A scheduled step's work is for its slot: another slot is other work (a catch-up
        # of a week is seven runs, not one and six skips).
        if env.get("FLOWSH_SCHEDULED_TIME"):
            hashes["slot"] = sha256_text(env["FLOWSH_SCHEDULED_TIME"])
        files = library_files(self.wf, step)
        if files:
            libkey = "\n".join(files)
            if libkey not in self._functions:
                self._functions[libkey] = library_functions(files, env, cwd)
            functions = self._functions[libkey]
            for name in called(step.run or "", functions):
                hashes[f"fn:{name}"] = sha256_text(functions[name])
        for name in sorted(self.var_names | set(step.env)):
            if name in env and name not in upstream:
                hashes[f"var:{name}"] = self._value_hash(name, env[name])
        for name, value in upstream.items():
            hashes[f"out:{name}"] = self._value_hash(name, value)
        hashes.update(file_hashes("src:", step.sources, cwd, self.stopped))
        return hashes

    def _value_hash(self, name: str, value: str) -> str:
        if name in self.secret_names or SECRET_NAME.search(name):
            key = (fingerprint_key(flowsh_home()) if self.make_key
                   else existing_key(flowsh_home()))
            return NO_KEY if key is None else keyed(key, f"{name}={value}")
        return sha256_text(f"{name}={value}")

    def check(self, step: Step, env: Mapping[str, str],
              upstream: Mapping[str, str]) -> StepRecord | None:
        """The last success to stand for this run's when `step` is up to date; None when
        it must run (its inputs are then kept for `succeeded`)."""
        if not step.sources:
            return None
        now = self.inputs(step, env, upstream)
        self.pending[step.name] = now
        if self.force_all or step.name in self.force:
            return None
        old = self.baseline.get(step.name)
        if compare(old, now, step_cwd(self.wf, step)):
            return None
        return old

    def succeeded(self, step: Step, rec: StepRecord) -> None:
        now = self.pending.pop(step.name, None)
        if now is None:
            return
        now.update(file_hashes("gen:", step.generates, step_cwd(self.wf, step),
                               self.stopped))
        rec.hashes, rec.fingerprint = now, fingerprint(now)
        self.baseline[step.name] = rec

    def up_to_date(self, step: Step, rec: StepRecord, old: StepRecord) -> None:
        """`rec` skipped as up to date: it carries `old`'s generated files forward."""
        now = self.pending.pop(step.name)
        now.update({k: v for k, v in old.hashes.items() if k.startswith("gen:")})
        rec.hashes, rec.fingerprint = now, fingerprint(now)
        rec.outputs = dict(old.outputs)


def tracker_for(wf: Workflow, backend: StateBackend, run_id: str, params: Iterable[str],
                force_all: bool = False, force: Iterable[str] = ()) -> Tracker | None:
    """The run's tracker, or None when no step has `sources:` (nothing is read)."""
    tracked = [s.name for s in wf.steps if s.sources]
    if not tracked:
        return None
    from flowsh.steps import env_file_values

    names = set(params) | set(wf.env) | set(env_file_values(wf))
    fingerprint_key(flowsh_home())  # a bad key file is refused before anything runs
    baseline = {} if force_all else last_successes(backend, wf.identity, tracked, run_id)
    return Tracker(wf, baseline, names, force_all, set(force),
                   secret_names=wf.secret_names())


def force_names(wf: Workflow, given: Iterable[str]) -> set[str]:
    """`--force-step` values (repeatable, or comma lists) checked against the file's steps;
    an unknown name is a usage error (exit 2) with the nearest step name."""
    from flowsh.errors import UsageError, did_you_mean

    names = {n.strip() for value in given for n in value.split(",") if n.strip()}
    known = [s.name for s in wf.steps]
    for name in sorted(names):
        if name not in known:
            raise UsageError(f"--force-step: no step {name!r} in {wf.path or wf.name}"
                             f"{did_you_mean(name, known)}")
    return names


@dataclass
class Verdict:
    step: str
    would_run: bool
    reason: str
    changes: list[Change] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"step": self.step, "would_run": self.would_run, "reason": self.reason,
                "changes": [{"kind": c.kind, "name": c.name, "how": c.how,
                             "text": c.describe()} for c in self.changes]}


def explain(wf: Workflow, name: str, params: Mapping[str, str],
            backend: StateBackend | None, slot: str | None = None) -> Verdict:
    """Whether `flowsh run` would run step `name` now, for `slot` (FLOWSH_SCHEDULED_TIME,
    part of the fingerprint) or none, and what changed since its last success (`flowsh
    why`). Upstream outputs are those of the dependencies' last successes (a secret one,
    which the store keeps masked, is taken as unchanged). No `backend`: no store yet, so
    no success. It writes nothing: no store, no fingerprint key."""
    from flowsh.graph import Graph
    from flowsh.libstate import evaluate
    from flowsh.runenv import RunEnvironment

    step = wf.step(name)
    if not step.sources:
        return Verdict(name, True, "it has no `sources:`, so it is never up to date")
    renv = RunEnvironment(wf, params, None)
    renv.stand_for(slot)  # as the engine sets it: libraries see it too
    graph = Graph.build(wf)
    ancestors: list[str] = []
    todo = list(graph.needs[name])
    while todo:
        dep = todo.pop()
        if dep not in ancestors:
            ancestors.append(dep)
            todo.extend(graph.needs[dep])
    records = ({} if backend is None
               else last_successes(backend, wf.identity, [name, *ancestors]))
    upstream: dict[str, str] = {}
    for dep in graph.order:  # in run order, as exports accumulate
        if dep in ancestors and dep in records:
            upstream.update(records[dep].outputs)
    env = {**renv.env, **upstream, **step.env}
    files = library_files(wf, step)
    if files:
        env["FLOWSH_LIBRARY_STATE"] = evaluate(files, renv.env, step_cwd(wf, step)).text
    tracker = Tracker(wf, {}, set(renv.params) | set(wf.env) | set(_env_file_names(wf)),
                      secret_names=wf.secret_names(), make_key=False)
    now = tracker.inputs(step, env, upstream)
    old = records.get(name)
    if old is not None:
        for key in [k for k in now if k.startswith("out:")]:
            if upstream.get(key[4:]) == MASK and key in old.hashes:
                now[key] = old.hashes[key]
    changes = compare(old, now, step_cwd(wf, step))
    if changes:
        return Verdict(name, True, "changed since its last successful run", changes)
    return Verdict(name, False, "up to date: nothing changed since its last successful run")


def _env_file_names(wf: Workflow) -> list[str]:
    from flowsh.steps import env_file_values

    return list(env_file_values(wf))


def export_context(wf: Workflow, steps: list[dict[str, object]], libsets: list[list[str]],
                   *, inline: bool) -> dict[str, object]:
    """What the exported script needs to tell an up-to-date step (templates/bash/
    uptodate.sh.j2), {} when no step has `sources:`. The command text is hashed here, as
    the script holds it; a non-inline script step's file is hashed again when it runs."""
    from flowsh.exportlib import step_prelude
    from flowsh.quoting import bash_quote

    tracked = {s.name: s for s in wf.steps if s.sources}
    if not tracked:
        return {}
    rows = []
    for ctx in steps:
        step = tracked.get(str(ctx["name"]))
        if step is None:
            continue
        script = ""
        if step.script is not None and not inline:
            script = bash_quote(str(resolve_path(wf, step.script, step_cwd(wf, step)).resolve()))
        rows.append({"name": step.name, "sources": "\n".join(step.sources),
                     "generates": "\n".join(step.generates),
                     "cmd": sha256_text(command_text(wf, step)), "script": script,
                     "text": step.run if ctx["libset"] != -1 else "",
                     "libset": ctx["libset"]})
    printer = 'for __f in $(compgen -A function); do declare -f "$__f"; printf "\\0"; done'
    return {"steps": rows,
            "functions": [step_prelude(refs) + "\n" + printer for refs in libsets]}
