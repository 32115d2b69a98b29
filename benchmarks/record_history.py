"""Record the asv benchmarks of past commits into the committed history (results/asv/).

    python benchmarks/record_history.py --machine my-laptop HEAD~1 HEAD
    asv compare --machine my-laptop --split HEAD~1 HEAD

Why a script: with ``environment_type: existing`` (offline, no wheel builds: the project's
torch is a local 2.14.1 build, FACTS.md) asv benchmarks whatever code is importable, so
``asv run`` alone cannot go back in history. For each commit this script checks it out in a
throw-away git worktree, puts that worktree first on the benchmarks' import path
(``ASV_PYTHONPATH``: asv drops a plain ``PYTHONPATH``) and runs that commit's own
``benchmarks/`` under ``--set-commit-hash``, so the JSON lands under the commit's hash in
``results/asv/<machine>/``. Dependencies are the current environment's for every commit.

The worktree's ``asv.conf.json`` is used with absolute paths for the repository, the
benchmarks and the results (a temporary copy), so commits made before the history existed
record into it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HISTORY = ROOT / "results" / "asv"


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve(rev: str) -> str:
    """The full commit hash of ``rev``; one clear line (exit 2) when git does not know it."""
    try:
        return _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        print(f"error: commit {rev!r}: expected a git revision of {ROOT} (e.g. HEAD~1, a "
              "hash, a branch); see `git log --oneline`", file=sys.stderr)
        sys.exit(2)


def history_config(worktree: Path, out: Path) -> Path:
    """A copy of the worktree's asv config with absolute paths: its benchmarks, this
    repository, the committed results folder; environments and HTML stay in ignored .asv/."""
    config = json.loads((worktree / "asv.conf.json").read_text())
    config.update(repo=str(ROOT), benchmark_dir=str(worktree / "benchmarks"),
                  results_dir=str(HISTORY), env_dir=str(ROOT / ".asv" / "env"),
                  html_dir=str(ROOT / ".asv" / "html"))
    path = out / "asv.conf.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def record(sha: str, machine: str, bench: str | None) -> bool:
    """Run one commit's benchmarks in a detached worktree and record them under its hash;
    False when asv reported a failed benchmark (its log above says which)."""
    with tempfile.TemporaryDirectory(prefix="asv-history-") as tmp:
        worktree = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", str(worktree), sha)
        try:
            config = history_config(worktree, Path(tmp))
            env = dict(os.environ, ASV_PYTHONPATH=str(worktree), OMP_NUM_THREADS="1",
                       OMP_WAIT_POLICY="PASSIVE")
            asv = [sys.executable, "-m", "asv"]
            subprocess.run([*asv, "machine", "--yes", "--machine", machine, "--config",
                            str(config)], cwd=worktree, env=env, check=True)
            command = [*asv, "run", "--config", str(config), "-E", "existing",
                       "--set-commit-hash", sha, "--machine", machine, "--show-stderr"]
            if bench:
                command += ["--bench", bench]
            # asv exits 2 when a benchmark fails; the others are recorded all the same, and a
            # failure is history too, so the next commits are still recorded
            return subprocess.run(command, cwd=worktree, env=env).returncode == 0
        finally:
            _git("worktree", "remove", "--force", str(worktree))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commits", nargs="+", help="git revisions to record, oldest first")
    parser.add_argument("--machine", required=True,
                        help="a name for this computer: results of different machines are "
                             "never compared with each other")
    parser.add_argument("--bench", default=None,
                        help="only benchmarks matching this regular expression (asv --bench)")
    args = parser.parse_args(argv)
    shas = [resolve(rev) for rev in args.commits]  # every revision checked before any run
    failed = [sha[:8] for sha in shas if not record(sha, args.machine, args.bench)]
    print(f"recorded {len(shas)} commit(s) into {HISTORY.relative_to(ROOT)}/{args.machine}/")
    if failed:
        sys.exit(f"benchmarks failed (recorded as failed) at: {', '.join(failed)}")


if __name__ == "__main__":
    main()
