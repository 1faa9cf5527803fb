"""flowsh.digest: hashlib's digests, without OpenSSL on a run's way to its first step."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowsh import digest


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000, 1 << 16])
def test_same_digests_as_hashlib(size: int) -> None:
    data = os.urandom(size)
    assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert digest.blake2b(data, digest_size=16).hexdigest() == \
        hashlib.blake2b(data, digest_size=16).hexdigest()
    h = digest.blake2b(digest_size=16)
    h.update(data[:size // 2])
    h.update(data[size // 2:])
    assert h.hexdigest() == hashlib.blake2b(data, digest_size=16).hexdigest()


def test_openssl_is_not_loaded() -> None:
    code = "import sys, flowsh.digest; print('_hashlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


# A sitecustomize that makes CPython look built without one of its own hash modules (as
# `--with-builtin-hashlib-hashes` leaves it): the import fails, as it would there.
SHIM = """import sys
class _Without:
    def find_spec(self, name, path=None, target=None):
        if name in {blocked!r}:
            raise ImportError("built without " + name)
        return None
sys.meta_path.insert(0, _Without())
"""


@pytest.mark.parametrize("blocked", [("_blake2",), ("_sha256", "_sha2"),
                                     ("_blake2", "_sha256", "_sha2")])
def test_runs_on_a_build_without_the_builtin_hashes(tmp_path: Path,
                                                    blocked: tuple[str, ...]) -> None:
    """Without _blake2, every command died with a traceback (hashlib has no blake2b
    then: CPython's is _blake2's): the parse cache needs a digest, not BLAKE2's."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM.format(blocked=blocked))
    flow = tmp_path / "one.yaml"
    flow.write_text('name: one\nsteps:\n  - {name: s, run: "echo ran >> out"}\n')
    env = {**os.environ, "PYTHONPATH": str(shim), "FLOWSH_HOME": str(tmp_path / "home"),
           "FLOWSH_LOAD_ENTRYPOINTS": "0"}
    probe = subprocess.run([sys.executable, "-c", "import _blake2"], env=env,
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 or "_blake2" not in blocked  # the shim took effect
    for _ in range(2):  # a cold parse cache, then a warm one
        res = subprocess.run([sys.executable, "-m", "flowsh", "run", "-q", str(flow)],
                             env=env, cwd=tmp_path, capture_output=True, text=True,
                             check=False)
        assert res.returncode == 0, res.stderr
        # No traceback through flowsh's code (the stdlib's own random.py logs one for a
        # missing _sha2 on 3.12, as it would on such a build with or without flowsh).
        assert "/flowsh/" not in res.stderr, res.stderr
    assert (tmp_path / "out").read_text() == "ran\nran\n"
    code = ("import sys; from pathlib import Path; from flowsh.loader import load_workflow;"
            "from flowsh.resume import definition_hash; from flowsh.builtin.pg_locks import "
            "advisory_key; print(definition_hash(load_workflow(Path(sys.argv[1]))), "
            "advisory_key('run', 'one'))")
    seen = [subprocess.run([sys.executable, "-c", code, str(flow)], env=e, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
            for e in (env, {**env, "PYTHONPATH": ""})]
    assert seen[0] == seen[1]  # the run records and the lock keys of any other build


def test_the_digests_other_releases_share_are_pinned() -> None:
    """Values computed by the release before flowsh.digest (hashlib.sha256). Runners of two
    releases on one PostgreSQL exclude each other only if they take the same advisory
    keys; an unnamed workflow's history is kept under its identity."""
    from flowsh.builtin.pg_locks import advisory_key
    from flowsh.model import Workflow

    assert advisory_key("migrate", "public") == 4198801095725852068
    assert advisory_key("workflow", "public", "nightly") == 2740801875252096877
    assert advisory_key("runner", "public", "20261205T020000-0123abcd") == 994448060920462691
    assert advisory_key("pool", "public", "db/0") == 9063332003610549126
    wf = Workflow.model_validate({"name": "x", "steps": [{"name": "a", "run": "true"}]})
    wf = wf.model_copy(update={"path": "/srv/flows/x.yaml", "name_declared": False})
    assert wf.identity == "x-aa4089f1"
