"""Shared by test_site, test_bases and test_verbs: running site.yml and reading its answers."""

import json
import os
import subprocess

from ansible_fixtures import ROOT
from conftest import PROJECT

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


def failed_messages(run):
    return [f"{task} on {host}: {result.get('msg')}" for task, host, result in run.results if result.get("failed")]


def ok(run):
    assert run.rc == 0 and run.failed == 0, "\n".join(failed_messages(run)) + "\n" + run.stderr[-3000:]
    assert "Traceback" not in output(run), output(run)[-6000:]
    return run


def failure(run):
    """The messages of the failed tasks, one per line (the run must have failed)."""
    assert run.rc != 0, output(run)[-4000:]
    assert "Traceback" not in output(run), output(run)[-6000:]
    messages = [str(result.get("msg", "")) for result in (item[2] for item in run.results) if result.get("failed")]
    return "\n".join(messages) or output(run)


ROLE = "homelab.pixels.site : "


def role_tasks(run):
    """(task name without the role's prefix, host, result) of the site role's tasks."""
    return [(task[len(ROLE):], host, result) for task, host, result in run.results if task.startswith(ROLE)]


def summary(run):
    """The summary table's lines."""
    return run.result(ROLE + "Summary table")["msg"]


def query(path):
    """``incus query`` in the test project (the CLI takes the project in the URL here); None on 404."""
    proc = subprocess.run(["incus", "query", f"{path}?project={PROJECT}&recursion=1"], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode:
        assert "not found" in proc.stderr.lower(), proc.stderr
        return None
    return json.loads(proc.stdout)


def instance(name):
    """Incus' own view of an instance (or None)."""
    return query(f"/1.0/instances/{name}")


def snapshots(name):
    """(label, created_at) of an instance's snapshots, oldest first; [] when it does not exist."""
    items = query(f"/1.0/instances/{name}/snapshots") or []
    return sorted(((s["name"], s["created_at"]) for s in items), key=lambda item: item[1])
