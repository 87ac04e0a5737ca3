"""Copier task: make the first commit of a freshly copied service.

`copier update` refuses a repository with uncommitted files, so a service is ready for its
first update only once the render is committed. This runs after `uv lock`, so that the commit
holds uv.lock. It commits only in the repository `init_git.py` made (not in one the service was
copied into, and never again on `copier recopy`), and only as whoever git was told the user is:
an identity git would guess from the user and host names is no one's.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

# user.useConfigOnly: git fails instead of guessing an identity.
GIT = ["git", "-c", "user.useConfigOnly=true"]
MESSAGE = "Render the service from its Copier template"


def git(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GIT, *arguments], capture_output=True, text=True, check=False)


def is_the_services_own_new_repository() -> bool:
    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path.cwd().resolve():
        return False
    return git("rev-parse", "--verify", "--quiet", "HEAD").returncode != 0


def author() -> str | None:
    """Who git commits as, "Name <email>"; None when the user has not told git."""
    identities = [git("var", name) for name in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")]
    if any(identity.returncode != 0 for identity in identities):
        return None
    return identities[0].stdout.rsplit(" ", 2)[0]  # less the timestamp and time zone


def print_how_to_commit(reason: str, *setup: str) -> None:
    service = shlex.quote(str(Path.cwd()))
    commit = f"cd {service} && git add --all && git commit -m {shlex.quote(MESSAGE)}"
    steps = "\n".join(f"  {step}" for step in (*setup, commit))
    print(f"{reason}\nThe first commit is yours to make; `copier update` needs it:\n{steps}")


def main() -> None:
    if shutil.which("git") is None or not is_the_services_own_new_repository():
        return
    committer = author()
    if committer is None:
        print_how_to_commit(
            "git has no user.name and user.email here, so the rendered service is not committed.",
            'git config --global user.name "Your Name"',
            'git config --global user.email "you@example.com"',
        )
        return
    # --no-verify: the commit holds exactly what the template rendered, and a pre-commit hook
    # installed by a global init.templateDir would fetch the service's hooks first.
    for step in (["add", "--all"], ["commit", "--quiet", "--no-verify", "-m", MESSAGE]):
        result = git(*step)
        if result.returncode != 0:
            reason = f"`git {step[0]}` failed, so the rendered service is not committed:"
            print_how_to_commit(f"{reason}\n{result.stderr.strip()}")
            return
    print(f"Committed the rendered service as {committer}.")


if __name__ == "__main__":
    main()
