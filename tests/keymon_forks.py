"""Run many ``python -m keymon ...`` commands as real processes, fast.

Starting Python and importing keymon costs most of a second; a corpus of a hundred and more
broken configurations cannot pay that for each. So one helper process (run with ``python -m
tests.keymon_forks``) imports keymon once, then forks a child per command. Each child is a real
process that runs ``keymon/__main__.py`` exactly as ``python -m keymon`` does (``runpy``), with
its own arguments, environment, working directory, stdout and stderr: its exit status is what
``python -m keymon`` would exit with, a crash is a signal (a negative return code), and an
uncaught exception prints its traceback and exits 1, as Python does.

Protocol: one JSON request per line on stdin (``id``, ``argv``, ``env``, ``cwd``); one JSON
result per line on stdout (``id``, ``returncode``, ``stdout``, ``stderr``), in completion order.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Children running at once: the machines this runs on have two cores.
PARALLEL = 2
#: A child still running after this long is killed by its own alarm (return code -14).
CHILD_TIMEOUT = 60


@dataclass(frozen=True)
class Completed:
    """What one command did."""

    returncode: int
    stdout: str
    stderr: str


def run_many(
    requests: Iterable[tuple[str, list[str], Mapping[str, str], Path]], *, timeout: float = 300
) -> dict[str, Completed]:
    """Run each ``(id, argv, env, cwd)`` as ``python -m keymon *argv``; results by id."""
    lines = [
        json.dumps({"id": i, "argv": argv, "env": dict(env), "cwd": str(cwd)})
        for i, argv, env, cwd in requests
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.keymon_forks"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the fork helper failed ({proc.returncode}):\n{proc.stderr}")
    results = {}
    for line in proc.stdout.splitlines():
        data = json.loads(line)
        results[data["id"]] = Completed(data["returncode"], data["stdout"], data["stderr"])
    return results


def _child(request: Mapping[str, Any], out: str, err: str) -> None:  # pragma: no cover - forked
    signal.alarm(CHILD_TIMEOUT)
    status = 1
    try:
        for fd, name in ((1, out), (2, err)):
            target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["keymon", *request["argv"]]
        try:
            runpy.run_module("keymon", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exc:
            if exc.code is None:
                status = 0
            elif isinstance(exc.code, int):
                status = exc.code
            else:
                print(exc.code, file=sys.stderr)
                status = 1
        except BaseException:  # as Python itself: the traceback, then status 1
            traceback.print_exc()
            status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve() -> None:  # pragma: no cover - runs in the helper process
    # What keymon imports lazily, imported once here so that no child pays for it.
    import apprise  # noqa: F401
    import cryptography.hazmat.primitives.serialization  # noqa: F401

    import keymon.cli
    import keymon.config  # noqa: F401

    requests = [json.loads(line) for line in sys.stdin if line.strip()]
    with tempfile.TemporaryDirectory(prefix="keymon-forks-") as scratch:
        running: dict[int, tuple[Mapping[str, Any], str, str]] = {}
        pending = list(reversed(requests))
        while pending or running:
            while pending and len(running) < PARALLEL:
                request = pending.pop()
                out = os.path.join(scratch, f"{len(pending)}.out")
                err = os.path.join(scratch, f"{len(pending)}.err")
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request, out, err)
                running[pid] = (request, out, err)
            pid, wait_status = os.wait()
            request, out, err = running.pop(pid)
            result = {
                "id": request["id"],
                "returncode": os.waitstatus_to_exitcode(wait_status),
                "stdout": Path(out).read_text(errors="replace"),
                "stderr": Path(err).read_text(errors="replace"),
            }
            print(json.dumps(result), flush=True)


if __name__ == "__main__":  # pragma: no cover
    _serve()
