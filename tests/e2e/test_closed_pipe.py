"""A reader that closes the pipe early (`aeserve evaluate ... | head`) ends the command quietly,
with the shell's status for it (141), never a traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

#: A subcommand that prints far more than a pipe's buffer holds (64 KiB on Linux).
LOUD = ("import sys; from aeserve import cli; "
        "cli._dispatch = lambda argv: [print('x' * 100) for _ in range(100_000)] and 0; "
        "sys.exit(cli.main([]))")


def test_a_closed_pipe_ends_the_command_without_a_traceback():
    done = subprocess.run(
        ["bash", "-c", f'{sys.executable} -c "{LOUD}" | head -c 1; echo " ${{PIPESTATUS[0]}}"'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stderr == "", done.stderr  # no BrokenPipeError, no "Exception ignored"
    assert done.stdout == "x 141\n"
