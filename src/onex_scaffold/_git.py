"""Git as the scaffold runs it: throw-away commits that never depend on the user's setup."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

#: Commits in the template cache and in staging repositories need an identity, but not the
#: user's: these are internal and never pushed.
GIT_ENV: Final = {
    "GIT_AUTHOR_NAME": "onex-scaffold",
    "GIT_AUTHOR_EMAIL": "onex-scaffold@localhost",
    "GIT_COMMITTER_NAME": "onex-scaffold",
    "GIT_COMMITTER_EMAIL": "onex-scaffold@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in ``cwd`` without signing or hooks; the caller judges the return code."""
    return subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
