"""How tests run Ansible: the only module that touches pytest-ansible.

pytest-ansible ends its life in December 2026. To retire it, replace the body of
``AnsibleRunner.module`` with a call to ``self.adhoc`` (which shells out to the
``ansible`` command); no test changes.
"""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
# A hung playbook fails its test after this long instead of eating the whole CI budget.
PLAYBOOK_TIMEOUT = int(os.environ.get("PIXELS_TEST_PLAYBOOK_TIMEOUT", "900"))


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    stats: dict = field(default_factory=dict)
    results: list = field(default_factory=list)  # (task name, host, result) in order

    def _parsed_stats(self):
        # No stats: the run printed no result (it crashed, or the callback's output changed). A
        # count of 0 then would pass every idempotence check on a run that did nothing.
        assert self.stats, f"the run printed no result (rc {self.rc}):\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}"
        return self.stats.values()

    @property
    def changed(self):
        return sum(s.get("changed", 0) for s in self._parsed_stats())

    @property
    def failed(self):
        return sum(s.get("failures", 0) + s.get("unreachable", 0) for s in self._parsed_stats())

    def result(self, task_name, host="localhost"):
        for name, where, result in self.results:
            if name == task_name and where == host:
                return result
        raise KeyError(f"no result of task {task_name!r} on {host}: {[r[0] for r in self.results]}")


class AnsibleRunner:
    """Runs our modules and playbooks against localhost with this Python."""

    def __init__(self, request, workdir):
        self._request = request
        self.workdir = workdir
        self.inventory = os.path.join(workdir, "inventory.ini")
        with open(self.inventory, "w") as handle:
            handle.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        self._localhost = None

    def env(self, extra=None):
        env = dict(os.environ)
        env.update({
            "PATH": BIN + os.pathsep + env.get("PATH", ""),
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "results_json",
            "ANSIBLE_CALLBACK_PLUGINS": os.path.join(ROOT, "tests", "callback_plugins"),
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
        })
        env.update(extra or {})
        return env

    def module(self, module, /, **args):
        """Run one module on localhost through pytest-ansible; its result dict."""
        if self._localhost is None:
            plugin = self._request.config.pluginmanager.getplugin("ansible")
            manager = plugin.initialize(self._request.config, self._request, inventory=self.inventory,
                                        connection="local", host_pattern="localhost")
            self._localhost = manager.localhost
        fqcn = module if "." in module else f"homelab.pixels.{module}"
        contacted = getattr(self._localhost, fqcn)(**args).contacted
        return dict(contacted["localhost"])

    def adhoc(self, module, /, check=False, diff=False, env=None, wrapper=(), **args):
        """Run one module with the ``ansible`` command (for --check, --diff, or a wrapper command)."""
        fqcn = module if "." in module else f"homelab.pixels.{module}"
        cmd = [*wrapper, os.path.join(BIN, "ansible"), "localhost", "-i", self.inventory, "-m", fqcn,
               "-a", json.dumps(args)]
        cmd += ["--check"] if check else []
        cmd += ["--diff"] if diff else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(env), cwd=ROOT, timeout=900, check=False)
        run = self._parse(proc)
        assert run.results, f"no result from {cmd}:\n{proc.stdout}\n{proc.stderr}"
        return run.results[0][2]

    def playbook(self, playbook, extra_vars=None, check=False, diff=False, env=None, inventory=None, args=(),
                 wrapper=()):
        """Run a playbook (a path, or YAML text written to a file), under ``wrapper`` (a command
        prefix) if given; a PlaybookRun."""
        if "\n" in playbook:
            path = os.path.join(self.workdir, f"play-{abs(hash(playbook))}.yml")
            with open(path, "w") as handle:
                handle.write(textwrap.dedent(playbook))
            playbook = path
        cmd = [*wrapper, os.path.join(BIN, "ansible-playbook"), "-i", inventory or self.inventory, playbook]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        cmd += ["--check"] if check else []
        cmd += ["--diff"] if diff else []
        cmd += list(args)
        # No terminal on stdin, as in CI: a prompt (pause) must not wait for an answer.
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(env), cwd=ROOT, timeout=PLAYBOOK_TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
        return self._parse(proc)

    @staticmethod
    def _parse(proc):
        run = PlaybookRun(proc.returncode, proc.stdout, proc.stderr)
        start = proc.stdout.find("{")
        if start < 0:
            return run
        try:
            data = json.loads(proc.stdout[start:])
        except ValueError:
            return run
        run.stats = data.get("stats", {})
        for play in data.get("plays", []):
            for task in play.get("tasks", []):
                for host, result in task.get("hosts", {}).items():
                    run.results.append((task["task"]["name"], host, result))
        return run


@pytest.fixture(scope="session")
def ansible(request, tmp_path_factory):
    return AnsibleRunner(request, str(tmp_path_factory.mktemp("ansible")))
