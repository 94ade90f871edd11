"""The host-allocator restart (mvjax.host_memory): the environment it builds, and that a process
restarts exactly once with the tunables, or not at all when opted out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mvjax.host_memory import TUNABLES, tuned_environment

SCRIPT = """
import os, sys
print("start", flush=True)
from mvjax.host_memory import reexec_tuned
reexec_tuned()
print("tunables=" + os.environ.get("GLIBC_TUNABLES", ""))
"""


def test_tuned_environment_keeps_other_tunables_and_is_idempotent():
    env = tuned_environment({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=on", "A": "1"})
    assert env["GLIBC_TUNABLES"] == f"glibc.cpu.x86_shstk=on:{TUNABLES}"
    assert env["A"] == "1"
    assert tuned_environment(env)["GLIBC_TUNABLES"] == env["GLIBC_TUNABLES"]
    assert tuned_environment({})["GLIBC_TUNABLES"] == TUNABLES


def _run(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return out.splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_process_restarts_once_with_the_tunables():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MVJAX_HOST_MALLOC")}
    lines = _run(env)
    assert lines.count("start") == 2  # the original process, then the restarted one
    assert lines[-1] == f"tunables={TUNABLES}"


def test_opt_out_runs_once_untouched():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["MVJAX_HOST_MALLOC"] = "default"
    lines = _run(env)
    assert lines == ["start", "tunables="]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_cli_restart_is_visible():
    """`mvjax --help` explains the restart and the one call a script needs; a command that restarted
    says so once on stderr, and an opted-out one does not."""
    from mvjax.cli import build_parser
    from mvjax.host_memory import NOTICE

    assert "reexec_tuned()" in build_parser().format_help()
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MVJAX_HOST_MALLOC")}
    for extra, expected in (({}, [NOTICE]), ({"MVJAX_HOST_MALLOC": "default"}, [])):
        proc = subprocess.run([sys.executable, "-m", "mvjax.cli", "version"], env={**env, **extra},
                              capture_output=True, text=True, timeout=120, check=True)
        assert [line for line in proc.stderr.splitlines() if line.startswith("mvjax:")] == expected
        assert proc.stdout.startswith("mvjax ")
