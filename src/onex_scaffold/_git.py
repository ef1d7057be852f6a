"""Git as the scaffold runs it: the one place that starts ``git``.

Stage 4.5, the template cache, the re-render command, the tests and the benchmarks all go
through :func:`run_git`, so every call has the same identity and none depends on the user's
setup (hooks, signing, system config). Modelled on Copier's ``_vcs.py``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

from onex_scaffold._exceptions import OnexError

__all__ = ["GIT_ENV", "GitError", "clone", "git", "has_commit", "run_git", "toplevel"]

#: Commits in the template cache and in staging repositories need an identity, but not the
#: user's: these are internal and never pushed.
GIT_ENV: Final = {
    "GIT_AUTHOR_NAME": "onex-scaffold",
    "GIT_AUTHOR_EMAIL": "onex-scaffold@localhost",
    "GIT_COMMITTER_NAME": "onex-scaffold",
    "GIT_COMMITTER_EMAIL": "onex-scaffold@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitError(OnexError, RuntimeError):
    """git failed; the message has the command, the folder and git's own words."""


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


def git(cwd: Path, *args: str) -> str:
    """:func:`run_git` that returns stdout and raises :class:`GitError` on failure."""
    result = run_git(cwd, *args)
    if result.returncode != 0:
        raise GitError(
            f"git {' '.join(args[:2])} failed in {cwd}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path``, or None (not in one, or gone)."""
    try:
        result = run_git(path, "rev-parse", "--show-toplevel")
    except OSError:  # the folder is gone or unreadable: not a work tree we can use
        return None
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip()).resolve()


def has_commit(repo: Path, revision: str) -> bool:
    """Whether ``revision`` names a commit in the repository at ``repo``."""
    found = run_git(
        repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
    )
    return found.returncode == 0


def clone(source: str | Path, destination: Path) -> None:
    """``git clone`` (no hard links: the clone may be changed freely)."""
    git(destination.parent, "clone", "--quiet", "--no-hardlinks", str(source), str(destination))
