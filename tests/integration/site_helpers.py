"""Shared by test_site, test_bases and test_verbs: running site.yml and reading its answers."""

import json
import os

from ansible_fixtures import ROOT
from conftest import incus_cli

SITE = os.path.join(ROOT, "site.yml")
OFF = {"provision": False, "devtools": False}


def write_vars(tmp_path, data, name="site.yml"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def site(ansible, tmp_path, data, check=False, name="site.yml", extra=None):
    """Run the root site.yml with ``data`` as a vars file (-e @file), as users do."""
    return ansible.playbook(SITE, extra_vars=extra, check=check, args=["-e", "@" + write_vars(tmp_path, data, name)])


def verb(ansible, verb_name, *cli, vars_file=None):
    """``ansible-playbook homelab.pixels.<verb> -e k=v ...``: values arrive as strings, as from a shell."""
    args = []
    for item in cli:
        args += ["-e", item]
    if vars_file:
        args += ["-e", "@" + vars_file]
    return ansible.playbook(f"homelab.pixels.{verb_name}", args=args)


def output(run):
    return run.stdout + run.stderr


def ok(run):
    assert run.rc == 0 and run.failed == 0, output(run)[-6000:]
    assert "Traceback" not in output(run), output(run)[-6000:]
    return run


def failure(run):
    """The messages of the failed tasks, one per line (the run must have failed)."""
    assert run.rc != 0, output(run)[-4000:]
    assert "Traceback" not in output(run), output(run)[-6000:]
    messages = [str(result.get("msg", "")) for _, _, result in run.results if result.get("failed")]
    return "\n".join(messages) or output(run)


def summary(run):
    """The summary table's lines."""
    return run.result("Summary")["msg"]


def instance(name):
    """Incus' own view of an instance (or None), from the CLI."""
    proc = incus_cli("query", f"/1.0/instances/{name}?recursion=1", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def snapshots(name):
    proc = incus_cli("query", f"/1.0/instances/{name}/snapshots?recursion=1", check=False)
    return [(s["name"], s["created_at"]) for s in json.loads(proc.stdout)] if proc.returncode == 0 else []
