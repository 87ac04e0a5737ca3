"""Copier migration: keep the team's edits to runtime files that an update removed.

Run by `copier update` after every update, in the service's root (see `_migrations` in
copier.yml):

    keep_runtime_edits.py PACKAGE_NAME

Copier deletes a file that the new template no longer has even when the team had changed it,
and says nothing. Releases move the runtime's code: 0.3 moved the flat modules into
`runtime/_internal/`; 0.4 split `_internal/agent/autogen_bridge.py` into engine-neutral modules
and the AutoGen engine's package, and moved `_internal/http/schemas.py` to
`_internal/contract.py`. This finds the runtime files the update deleted (in the last commit,
gone from the tree), renders the template the service came from to learn what each looked like
untouched, and for each one the team had changed writes the team's edit as a patch to
`runtime-edits/<path under runtime/>.diff`, naming where the code went. Nothing is lost, and
nothing is applied blindly: the team ports the patch and deletes the folder.

A file the update deleted for another reason (an answer turned its feature off) is kept the
same way, without a new place. With nothing deleted it does nothing, so it is safe to run on
every update.
"""

import difflib
import posixpath
import subprocess
import sys
import tempfile
from pathlib import Path

import copier
import yaml
from runtime_public_api import MOVED_MODULES

SAVED = Path("runtime-edits")
# Where 0.4 put the code of the AutoGen bridge, under runtime/.
AUTOGEN_BRIDGE_PARTS = (
    "_internal/agent/engines/autogen/",
    "_internal/agent/turn.py",
    "_internal/agent/engine.py",
    "_internal/agent/approvals.py",
    "_internal/agent/transcript.py",
    "_internal/agent/lineup.py",
    "_internal/agent/upstream.py",
    "_internal/agent/mcp_client.py",
)
# Where the code of each runtime file that a release removed went, as paths under runtime/.
MOVED_FILES: dict[str, tuple[str, ...]] = {
    # 0.3: the flat modules, in _internal/ now.
    **{f"{old}.py": (f"{new.replace('.', '/')}.py",) for old, new in MOVED_MODULES.items()},
    "autogen_bridge.py": AUTOGEN_BRIDGE_PARTS,
    # 0.4
    "_internal/agent/autogen_bridge.py": AUTOGEN_BRIDGE_PARTS,
    "_internal/http/schemas.py": ("_internal/contract.py",),
}


def _git(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *arguments], capture_output=True, text=True, check=False)


def deleted_runtime_files(package_name: str) -> list[str]:
    """The runtime's files, as paths under runtime/, that the last commit has and the working
    tree no longer has."""
    runtime = Path("src", package_name, "runtime")
    listed = _git("ls-tree", "-r", "-z", "--name-only", "HEAD", f"{runtime.as_posix()}/")
    if listed.returncode != 0:
        return []
    committed = [Path(name) for name in listed.stdout.split("\0") if name]
    return sorted(path.relative_to(runtime).as_posix() for path in committed if not path.exists())


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


def what_to_do(package_name: str, name: str) -> str:
    places = MOVED_FILES.get(name)
    if places is None:
        return "the update removed the file; port the edit where it still applies (or drop it)"
    runtime = f"src/{package_name}/runtime"
    if len(places) == 1:
        return f"its code is now in {runtime}/{places[0]}; port the edit there (or drop it)"
    common = posixpath.commonpath(places)
    # A folder keeps its trailing slash, which relpath drops.
    listed = ", ".join(
        posixpath.relpath(place, common) + ("/" if place.endswith("/") else "") for place in places
    )
    return f"its code is now in {runtime}/{common}/ ({listed}); port the edit there (or drop it)"


def main(package_name: str) -> None:
    deleted = deleted_runtime_files(package_name)
    if not deleted:
        return
    shown = _git("show", "HEAD:.copier-answers.yml")
    if shown.returncode != 0:
        return
    answers = yaml.safe_load(shown.stdout)
    with tempfile.TemporaryDirectory() as scratch:
        untouched = render_previous_template(answers, Path(scratch) / "service")
        for name in deleted:
            path = f"src/{package_name}/runtime/{name}"
            original_file = untouched / path
            original = original_file.read_text().splitlines(True) if original_file.exists() else []
            team = _git("show", f"HEAD:{path}").stdout.splitlines(True)
            if team == original:
                continue
            patch = SAVED / f"{name}.diff"
            patch.parent.mkdir(parents=True, exist_ok=True)
            patch.write_text("".join(difflib.unified_diff(original, team, path, path)))
            print(
                f"migration: your edit of {path} is kept in {patch}: "
                f"{what_to_do(package_name, name)}, then delete {SAVED}/"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {Path(sys.argv[0]).name} PACKAGE_NAME")
    main(sys.argv[1])
