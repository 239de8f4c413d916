"""The collection as its users get it: the tarball of `ansible-galaxy collection build`, installed
with `ansible-galaxy collection install` into a virtualenv of its own (requirements.txt and
ansible-core only), used from there against the real Incus; and the execution environment that
ansible-builder makes from it for AWX / Automation Platform."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from ansible_fixtures import ROOT
from conftest import PROJECT, incus_cli

BIN = os.path.dirname(sys.executable)
NAME = "gx-installed"
with open(os.path.join(ROOT, "galaxy.yml")) as _handle:
    VERSION = yaml.safe_load(_handle)["version"]
TARBALL = f"homelab-pixels-{VERSION}.tar.gz"


def run(cmd, env=None, cwd=None, timeout=600):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    return proc


def build(source, output):
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(output),
         str(source)], cwd=str(output))
    return output / TARBALL


def checkout_files():
    """The work tree's files as git sees them (tracked, or new and not ignored)."""
    # (safe.directory: `sudo ./run test` in a user's clone is root in a repository root does not own)
    listed = run(["git", "-c", f"safe.directory={ROOT}", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"]).stdout
    return sorted(p for p in set(listed.split("\0")) if p and os.path.isfile(os.path.join(ROOT, p)))


# -- what the tarball holds --------------------------------------------------------

def litter(tree):
    """What a checkout collects from `make venv`, `make test`, molecule, ansible-test, editors."""
    # pytest-ansible's link tree: one symlink per top-level entry
    links = tree / "collections" / "ansible_collections" / "homelab" / "pixels"
    links.mkdir(parents=True)
    for entry in sorted(tree.iterdir()):
        if entry.name != "collections":
            (links / entry.name).symlink_to(entry)
    # make venv: a virtualenv with the collection linked into it
    venv_link = tree / ".venv" / "collections" / "ansible_collections" / "homelab" / "pixels"
    venv_link.parent.mkdir(parents=True)
    venv_link.symlink_to(tree)
    (tree / ".venv" / "bin").mkdir()
    (tree / ".venv" / "bin" / "python").symlink_to(sys.executable)
    for path in ("tests/output/junit/x.xml", "build/homelab-pixels-0.0.1.tar.gz", f"homelab-pixels-{VERSION}.tar.gz",
                 "homelab-pixels-0.0.9.tar.gz", ".pytest_cache/v/cache/lastfailed", ".cache/x",
                 ".ansible/collections/ansible_collections/x", "plugins/module_utils/__pycache__/names.cpython-311.pyc",
                 "plugins/filter/split_env.pyc", "roles/site/tasks/main.yml.swp", "README.md~",
                 ".mypy_cache/x", ".ruff_cache/x", ".tox/x", ".vscode/settings.json", ".idea/x.xml"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text("litter\n")
    # an outside link as such tools make them
    (tree / "tests" / "output").joinpath("outside").symlink_to("/etc")


def test_tarball_holds_the_collection_only(tmp_path):
    """From a checkout littered as after `make venv`, `make test` (pytest-ansible's link tree) and
    editors: the tarball has exactly the collection's own files, no link tree, no virtualenv, no
    build leftovers."""
    tree = tmp_path / "checkout"
    files = checkout_files()
    for rel in files:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), tree / rel)
    litter(tree)
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    tarball = build(tree, out)
    print(f"build: {time.monotonic() - started:.1f} s")

    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert not [m.name for m in members if m.issym() or m.islnk()], "links in the tarball"
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")]
    for junk in ("collections", ".venv", "build", ".cache", ".ansible", ".pytest_cache", ".ci", "tests/output",
                 ".mypy_cache", ".ruff_cache", ".tox", ".vscode", ".idea"):
        assert not [n for n in names if n == junk or n.startswith(junk + "/")], junk
    assert not [n for n in names if n.endswith((".pyc", ".tar.gz", ".swp", "~")) or "__pycache__" in n]
    # exactly the checkout's files, less the CI scripts and galaxy.yml (MANIFEST.json replaces it)
    packed = {m.name for m in members if m.isfile()}
    expected = {f for f in files if not f.startswith(".ci/") and f != "galaxy.yml"} | {"MANIFEST.json", "FILES.json"}
    assert packed == expected, (sorted(packed - expected), sorted(expected - packed))
    # and no directory that holds none of them
    parents = {"/".join(f.split("/")[:depth]) for f in packed for depth in range(1, f.count("/") + 1)}
    assert {m.name for m in members if m.isdir()} == parents


# -- installed from the tarball, in a virtualenv of its own -------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The tarball of this checkout installed into a fresh virtualenv's collections path; the
    environment for its commands: no ANSIBLE_* of the tests, no ansible.cfg of the checkout, no
    .venv on PATH; a working directory outside the checkout."""
    base = tmp_path_factory.mktemp("installed")
    timings = {}
    started = time.monotonic()
    tarball = build(ROOT, base)
    timings["build"] = time.monotonic() - started

    venv = base / "venv"
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)])
    core = run([os.path.join(BIN, "python"), "-c", "import ansible.release as r; print(r.__version__)"]).stdout.strip()
    # requirements.txt and ansible-core only (the version the tests run with): not the test tools.
    # pip's own cache (~/.cache/pip) makes this mostly local.
    run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r",
         os.path.join(ROOT, "requirements.txt"), f"ansible-core=={core}"], timeout=900)
    timings["venv"] = time.monotonic() - started

    work = base / "work"
    work.mkdir()
    collections = base / "collections"
    cfg = work / "ansible.cfg"
    cfg.write_text(f"[defaults]\ncollections_path = {collections}\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "PYTEST", "VIRTUAL_ENV", "PYTHON"))}
    paths = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(BIN)]
    env.update({
        "PATH": os.pathsep.join([str(venv / "bin"), *paths]),
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "HOME": str(base / "home"),
    })
    started = time.monotonic()
    run([str(venv / "bin" / "ansible-galaxy"), "collection", "install", str(tarball)], env=env, cwd=str(work))
    timings["install"] = time.monotonic() - started
    print("installed: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    yield {"venv": venv, "collections": collections, "env": env, "cwd": str(work), "tarball": tarball,
           "path": collections / "ansible_collections" / "homelab" / "pixels"}


def in_installed(installed, tool, *args, timeout=900):
    """A command of the fresh virtualenv; the PIXELS_* and XDG_CONFIG_HOME of the test project (set
    by the incus fixture, maybe after the installed fixture) as they are now."""
    env = dict(installed["env"])
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIXELS_") or k == "XDG_CONFIG_HOME"})
    return run([str(installed["venv"] / "bin" / tool), *args], env=env, cwd=installed["cwd"], timeout=timeout)


def test_installed_copy_is_the_one_ansible_uses(installed):
    listed = in_installed(installed, "ansible-galaxy", "collection", "list", "homelab.pixels", "--format", "json")
    assert json.loads(listed.stdout) == {
        str(installed["collections"] / "ansible_collections"): {"homelab.pixels": {"version": VERSION}}}
    doc = in_installed(installed, "ansible-doc", "homelab.pixels.pixels_container").stdout
    assert str(installed["path"] / "plugins" / "modules" / "pixels_container.py") in doc
    assert ROOT not in doc
    # what the fresh virtualenv has: requirements.txt's libraries, not the tests' tools
    freeze = in_installed(installed, "pip", "freeze").stdout.lower()
    assert "pylxd==" in freeze and "ansible-core==" in freeze
    assert "pytest" not in freeze and "molecule" not in freeze and "ansible-builder" not in freeze


def test_verbs_and_inventory_from_the_installed_copy(installed, incus):
    """create, list, the sandboxes inventory and destroy, with Incus in the test project (the
    PIXELS_* environment), all from the installed copy."""
    started = time.monotonic()
    try:
        created = in_installed(installed, "ansible-playbook", "homelab.pixels.create", "-e", f"name={NAME}",
                               "-e", "provision=false", "-e", "devtools=false", "-vvv")
        out = created.stdout + created.stderr
        assert incus_cli("list", f"^px-{NAME}$", "--format", "csv", "-c", "s").stdout.strip() == "RUNNING"
        # every task and module came from the installed copy, nothing from the checkout
        task_paths = [line.split("task path: ", 1)[1] for line in out.splitlines() if "task path: " in line]
        assert task_paths and all(p.startswith(str(installed["path"]) + "/") for p in task_paths), task_paths
        assert ROOT + "/" not in out, [line for line in out.splitlines() if ROOT + "/" in line][:5]
        assert f"config file = {installed['cwd']}/ansible.cfg" in out or \
            f"Using {installed['cwd']}/ansible.cfg as config file" in out

        listed = in_installed(installed, "ansible-playbook", "homelab.pixels.list").stdout
        assert any(NAME in line and "running" in line for line in listed.splitlines()), listed

        source = os.path.join(installed["cwd"], "sandboxes.pixels.yml")
        with open(source, "w") as handle:
            yaml.safe_dump({"plugin": "homelab.pixels.sandboxes", "project": PROJECT}, handle)
        inventory = in_installed(installed, "ansible-inventory", "-i", source, "--list", "-vvvv")
        talk, listing = inventory.stdout.split("\n{\n", 1)  # the verbose lines, then the JSON
        assert f"Loading collection homelab.pixels from {installed['path']}\n" in talk, talk
        assert ROOT + "/" not in inventory.stdout + inventory.stderr
        hostvars = json.loads("{" + listing)["_meta"]["hostvars"]
        assert hostvars[NAME]["pixels_instance"] == f"px-{NAME}"
        assert isinstance(hostvars[NAME]["ansible_host"], str), hostvars[NAME]
        assert NAME in json.loads(in_installed(installed, "ansible-inventory", "-i", source, "--host", NAME).stdout
                                  )["pixels_instance"]

        # a command inside it through the installed connection plugin (the inventory's default)
        inside = in_installed(installed, "ansible", "-i", source, NAME, "-m", "ansible.builtin.raw",
                              "-a", "cat /etc/hostname").stdout
        assert f"px-{NAME}" in inside, inside

        in_installed(installed, "ansible-playbook", "homelab.pixels.destroy", "-e", f"name={NAME}", "-e", "force=true")
        assert incus_cli("list", f"^px-{NAME}$", "--format", "csv", "-c", "n").stdout.strip() == ""
    finally:
        incus_cli("delete", "--force", f"px-{NAME}", check=False)
    print(f"verbs and inventory from the installed copy: {time.monotonic() - started:.1f} s")


# -- the execution environment -----------------------------------------------------------------

def test_execution_environment(installed, tmp_path):
    """examples/execution-environment.yml with the tarball next to it: `ansible-builder create`
    makes the build context (no container engine), the context's galaxy stage installs the
    collection as the image build does, and the context's own introspect script, run on it as in
    the image's builder stage, finds our requirements.txt and bindep.txt."""
    shutil.copy(os.path.join(ROOT, "examples", "execution-environment.yml"), tmp_path)
    shutil.copy(installed["tarball"], tmp_path)
    context = tmp_path / "context"
    run([os.path.join(BIN, "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", str(context)],
        cwd=str(tmp_path))
    build = context / "_build"
    assert (build / "collections" / TARBALL).is_file(), "the tarball is copied into the context"
    containerfile = next(p for p in (context / "Containerfile", context / "Dockerfile") if p.exists()).read_text()
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile

    # the galaxy stage: in _build (the image's /build), ansible-galaxy reads requirements.yml (with
    # no other collection path, where it would find homelab.pixels installed and do nothing)
    collections = tmp_path / "ee-collections"
    env = dict(installed["env"], ANSIBLE_COLLECTIONS_PATH=str(collections))
    installing = run([str(installed["venv"] / "bin" / "ansible-galaxy"), "collection", "install", "-r",
                      "requirements.yml", "--collections-path", str(collections)], cwd=str(build), env=env)
    assert "homelab.pixels:" in installing.stdout and "was installed successfully" in installing.stdout, \
        installing.stdout
    # the builder stage: introspect writes the Python and system requirements to install
    pip_out, bindep_out = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    shown = run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", str(collections),
                 f"--write-pip={pip_out}", f"--write-bindep={bindep_out}"]).stdout

    def requirement_lines(path):
        assert os.path.exists(path), f"introspect found no requirements for {path.name}:\n{shown}"
        with open(path) as handle:
            return [line.split("#")[0].strip() for line in handle if line.split("#")[0].strip()]

    ours_pip = requirement_lines(Path(ROOT, "requirements.txt"))
    ours_bindep = requirement_lines(Path(ROOT, "bindep.txt"))
    assert ours_pip and ours_bindep
    assert sorted(requirement_lines(pip_out)) == sorted(ours_pip), (pip_out.read_text(), shown)
    assert sorted(requirement_lines(bindep_out)) == sorted(ours_bindep), (bindep_out.read_text(), shown)
    assert "homelab.pixels" in pip_out.read_text() and "homelab.pixels" in bindep_out.read_text()
