"""Copier migration: keep the team's edits to runtime modules that an update removed.

Run by `copier update` after every update, in the service's root (see `_migrations` in
copier.yml):

    keep_runtime_edits.py PACKAGE_NAME

Template 0.3 moved the runtime's modules into `runtime/_internal/`. Copier deletes a
file that the new template no longer has even when the team had changed it, and says
nothing. This finds the old modules the update deleted (in the last commit, gone from
the tree), renders the template the service came from to learn what each looked like
untouched, and for each one the team had changed writes the team's edit as a patch to
`runtime-edits/<module>.py.diff`, naming where the module went. Nothing is lost, and
nothing is applied blindly: the team ports the patch and deletes the folder.

With nothing deleted (later updates, or a service rendered at 0.3 or after) it does
nothing, so it is safe to run on every update.
"""

import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

import copier
import yaml
from runtime_public_api import MOVED_MODULES

SAVED = Path("runtime-edits")


def _git(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *arguments], capture_output=True, text=True, check=False)


def deleted_old_modules(package_name: str) -> list[str]:
    """Old runtime modules that the last commit has and the working tree no longer has."""
    runtime = f"src/{package_name}/runtime"
    listed = _git("ls-tree", "--name-only", "HEAD", f"{runtime}/")
    if listed.returncode != 0:
        return []
    committed = {Path(line).stem for line in listed.stdout.split()}
    return sorted(
        name
        for name in MOVED_MODULES
        if name in committed and not Path(runtime, f"{name}.py").exists()
    )


def render_previous_template(answers: dict[str, object], destination: Path) -> Path:
    """The service as the template rendered it before the update, with the same answers."""
    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    copier.run_copy(
        str(answers["_src_path"]),
        destination,
        data=data,
        vcs_ref=str(answers["_commit"]),
        defaults=True,
        quiet=True,
        skip_tasks=True,
        unsafe=True,
    )
    return destination


def main(package_name: str) -> None:
    deleted = deleted_old_modules(package_name)
    if not deleted:
        return
    shown = _git("show", "HEAD:.copier-answers.yml")
    if shown.returncode != 0:
        return
    answers = yaml.safe_load(shown.stdout)
    with tempfile.TemporaryDirectory() as scratch:
        untouched = render_previous_template(answers, Path(scratch) / "service")
        for name in deleted:
            path = f"src/{package_name}/runtime/{name}.py"
            original_file = untouched / path
            original = original_file.read_text().splitlines(True) if original_file.exists() else []
            team = _git("show", f"HEAD:{path}").stdout.splitlines(True)
            if team == original:
                continue
            SAVED.mkdir(exist_ok=True)
            patch = SAVED / f"{name}.py.diff"
            patch.write_text("".join(difflib.unified_diff(original, team, path, path)))
            new_place = f"src/{package_name}/runtime/{MOVED_MODULES[name].replace('.', '/')}.py"
            print(
                f"migration: your edit of {path} is kept in {patch}: the module is now "
                f"{new_place}; port the edit there (or drop it), then delete {SAVED}/"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {Path(sys.argv[0]).name} PACKAGE_NAME")
    main(sys.argv[1])
