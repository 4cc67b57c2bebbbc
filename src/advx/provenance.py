"""Provenance: which code made a result, and digests of the files it read.

`code_version()` is advx's version, a digest of the package's source files (the part of the key that decides
whether a cached stage is still valid), and, in a git checkout, the commit and whether tracked files differ
from it (recorded for people; a README edit does not invalidate results). Every run's env.json records it.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from advx import __version__


@functools.cache
def code_version() -> dict:
    """advx's version, a digest of its source files, and the git commit and dirty flag of a checkout."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"advx": __version__, "source": digest.hexdigest()[:16], **_git_state(package)}


def _git_state(folder: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=folder)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None or git("ls-files", "--error-unmatch", "__init__.py") is None:  # not a checkout of advx itself
        return {"git_sha": None, "dirty": None}
    return {"git_sha": sha, "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))}


def describe_code(code: dict) -> str:
    """`advx 0.1.0 (1f659e3+dirty, source 3fa2...)` for reports."""
    sha = code.get("git_sha")
    commit = f"{sha[:7]}{'+dirty' if code.get('dirty') else ''}, " if sha else ""
    return f"advx {code.get('advx')} ({commit}source {code.get('source', '?')[:8]})"


@functools.cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (cached per process by path, size and mtime); 'missing' when absent."""
    if not path.is_file():
        return "missing"
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
