"""The homelab.pixels.devtools role inside a real sandbox: real installs.

The npm route runs for real (Debian's Node over plain HTTP, the agent CLIs from the npm
registry through the host's CA bundle); it is installed once and shared by the tests here.
The mise route is checked as far as this machine allows: its downloads are unreachable, which
the status must report as failed while the sandbox stays usable.
"""

import time

import pytest

from conftest import in_sandbox, incus_cli, wait_for
from test_connection import host_line, no_traceback, write_inventory
from test_provision import HOST_BUNDLE, make_key, provision, ssh

NAME = "pv-dev"
INSTANCE = "px-" + NAME
INSTALL_TIMEOUT = 900

PLAY = """
- hosts: sandboxes
  gather_facts: false
  roles:
    - role: homelab.pixels.devtools
"""

STATUS = """
- hosts: sandboxes
  gather_facts: false
  tasks:
    - name: status
      homelab.pixels.pixels_devtools_info:
        tail_lines: 5
"""


class Box:
    def __init__(self, ansible, workdir):
        self.ansible = ansible
        self.workdir = workdir
        self.inventory = write_inventory(workdir, host_line(NAME, pixels_instance=INSTANCE), name="devtools.ini")

    def devtools(self, **extra_vars):
        run = self.ansible.playbook(PLAY, extra_vars=extra_vars, inventory=self.inventory)
        no_traceback(run)
        return run

    def status(self):
        run = self.ansible.playbook(STATUS, inventory=self.inventory)
        assert run.rc == 0, run.stdout[-2000:]
        return run.result("status", NAME)

    def wait(self, timeout=INSTALL_TIMEOUT):
        """Poll until done or failed; (final status, states seen)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if not seen or seen[-1] != status["state"]:
                seen.append(status["state"])
            if status["state"] in ("done", "failed"):
                return status, seen
            time.sleep(3)
        raise AssertionError(f"installer still {seen[-1]} after {timeout} s: {status}")


@pytest.fixture(scope="module")
def box(ansible, incus, tmp_path_factory):
    """A provisioned sandbox (host CA bundle) with the npm route installed: (Box, key, first run, seconds, seen)."""
    result = ansible.module("pixels_container", name=NAME, cpu=2, memory=2048)
    assert not result.get("failed"), result
    workdir = tmp_path_factory.mktemp("devtools")
    key, public = make_key(workdir)
    run = provision(ansible, workdir, INSTANCE, {"pixels_ssh_keys": [public], "pixels_ca_certificates": [HOST_BUNDLE]})
    assert run.rc == 0, run.stdout[-3000:]
    box = Box(ansible, workdir)
    absent = box.status()
    start = time.perf_counter()
    first = box.devtools(pixels_devtools_installer="npm")
    returned_after = time.perf_counter() - start
    status, seen = box.wait()
    yield {"box": box, "key": key, "absent": absent, "first": first, "returned_after": returned_after,
           "status": status, "seen": seen}
    incus_cli("delete", "--force", INSTANCE, check=False)


def test_status_absent_before(box):
    assert box["absent"]["state"] == "absent" and box["absent"]["steps"] == []


def test_play_returns_while_installing(box):
    first = box["first"]
    assert first.rc == 0 and first.changed > 0, first.stdout[-3000:]
    assert box["returned_after"] < 180, box["returned_after"]  # a bound for a loaded machine; seen[0] is the proof
    assert box["seen"][0] in ("pending", "running"), box["seen"]
    assert "running" in box["seen"] and box["seen"][-1] == "done", box["seen"]


def test_status_per_step(box):
    status = box["status"]
    assert status["installer"] == "npm"
    assert [s["name"] for s in status["steps"]] == ["node", "claude", "codex", "opencode"]
    for step in status["steps"]:
        assert step["state"] == "done" and step["rc"] == 0, step
        assert step["finished"] >= step["started"] > 0, step
    assert status["steps"][0]["log_tail"].splitlines()[-1].strip()[0].isdigit()  # npm --version


def test_agent_clis_answer_as_pixel(box):
    rc, out, err = ssh(INSTANCE, "pixel", box["key"],
                       "echo $NODE_EXTRA_CA_CERTS; claude --version; codex --version; opencode --version")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "/etc/ssl/certs/ca-certificates.crt"
    assert "Claude Code" in lines[1], out
    assert lines[2].startswith("codex-cli "), out
    assert lines[3][0].isdigit(), out


def test_second_run_installs_nothing(box):
    before = in_sandbox(INSTANCE, "stat -c %Y /var/lib/pixels/devtools/node.status")
    run = box["box"].devtools(pixels_devtools_installer="npm", pixels_devtools_wait=True)
    assert run.rc == 0 and run.changed == 0, [r[0] for r in run.results if r[2].get("changed")]
    assert in_sandbox(INSTANCE, "stat -c %Y /var/lib/pixels/devtools/node.status") == before


def test_unknown_tool(box):
    run = box["box"].devtools(pixels_devtools_installer="npm", pixels_devtools_tools={"cluade": "latest"})
    assert run.rc != 0
    msg = [r[2]["msg"] for r in run.results if r[2].get("failed")][0]
    assert "unknown tool 'cluade'" in msg and "pixels_devtools_catalog" in msg, msg
    assert box["box"].status()["state"] == "done"  # nothing restarted


def test_unreachable_nodesource(box):
    """An installer source that refuses: failed in the status with the log tail; the rest still works."""
    run = box["box"].devtools(pixels_devtools_installer="npm", pixels_devtools_node_source="nodesource",
                              pixels_devtools_nodesource_key_url="http://127.0.0.1:9/nodesource.asc",
                              pixels_devtools_wait=True, pixels_devtools_wait_timeout=120)
    assert run.rc != 0
    msg = [r[2]["msg"] for r in run.results if r[2].get("failed")][0]
    assert "step(s) node failed" in msg and "127.0.0.1" in msg, msg
    status = box["box"].status()
    assert status["state"] == "failed" and status["failed_steps"] == ["node"]
    assert [s["state"] for s in status["steps"]] == ["failed", "pending", "pending", "pending"]
    assert "Failed to connect to 127.0.0.1 port 9" in status["steps"][0]["log_tail"], status["steps"][0]
    assert in_sandbox(INSTANCE, "ls /etc/apt/sources.list.d/").split() == ["debian.sources"]
    rc, out, err = ssh(INSTANCE, "pixel", box["key"], "claude --version")
    assert rc == 0 and "Claude Code" in out, err


def test_mise_route(box):
    """Config rendered for pixel, the unit started in the background; mise.run is unreachable here."""
    box_ = box["box"]
    start = time.perf_counter()
    run = box_.devtools(pixels_devtools_tools={"node": "22", "claude": "2.1.0", "npm:prettier": "latest"})
    assert run.rc == 0 and time.perf_counter() - start < 180, run.stdout[-3000:]
    config = in_sandbox(INSTANCE, "cat /home/pixel/.config/mise/config.toml; stat -c %U /home/pixel/.config/mise/config.toml")
    assert '"node" = "22"' in config
    assert '"npm:@anthropic-ai/claude-code" = "2.1.0"' in config
    assert '"npm:prettier" = "latest"' in config
    assert config.split()[-1] == "pixel"
    status, seen = box_.wait(timeout=300)
    assert status["installer"] == "mise"
    assert [s["name"] for s in status["steps"]] == ["mise", "node", "claude", "npm_prettier"]
    assert status["state"] == "failed" and status["failed_steps"] == ["mise"], status
    assert "mise.run" in status["steps"][0]["log_tail"], status["steps"][0]
    assert in_sandbox(INSTANCE, "systemctl show -p ExecMainStartTimestampMonotonic --value pixels-devtools").strip() != "0"
    assert in_sandbox(INSTANCE, "grep -c mise /etc/profile.d/pixels-mise.sh").strip() != "0"
    # the sandbox is usable otherwise
    rc, out, err = ssh(INSTANCE, "pixel", box["key"], "id -un; codex --version")
    assert rc == 0 and out.startswith("pixel\ncodex-cli"), err


def test_mise_reads_the_config_as_pixel(box):
    """With mise present (from the npm registry here), its steps run as pixel from the rendered config and
    fail only where nodejs.org is unreachable."""
    in_sandbox(INSTANCE, "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm install -g --no-fund --no-audit mise")
    try:
        run = box["box"].devtools(pixels_devtools_tools={"node": "lts"}, pixels_devtools_wait=True,
                                  pixels_devtools_wait_timeout=300)
        assert run.rc != 0
        status = box["box"].status()
        assert [(s["name"], s["state"]) for s in status["steps"]] == [("mise", "done"), ("node", "failed")], status
        assert "node@lts" in status["steps"][1]["log_tail"] and "config.toml" in status["steps"][1]["log_tail"]
    finally:
        in_sandbox(INSTANCE, "npm uninstall -g mise", check=False)


def test_interrupted_install_is_failed(box):
    """The installer stopped mid-step (as in a sandbox stopped or cloned while installing) is not waited for forever."""
    box_ = box["box"]
    # a server that accepts and never answers: the node step hangs in curl until we stop the unit
    in_sandbox(INSTANCE, "systemd-run --unit pv-silent python3 -c 'import socket, time; s = socket.socket();"
                         " s.bind((\"127.0.0.1\", 8765)); s.listen(); c = s.accept(); time.sleep(900)'")
    try:
        run = box_.devtools(pixels_devtools_installer="npm", pixels_devtools_node_source="nodesource",
                            pixels_devtools_nodesource_key_url="http://127.0.0.1:8765/nodesource.asc")
        assert run.rc == 0, run.stdout[-3000:]
        wait_for(lambda: "downloading" in box_.status()["steps"][0]["log_tail"], timeout=60,
                 what="the node step to start downloading the key")
        assert box_.status()["state"] == "running"
        in_sandbox(INSTANCE, "systemctl stop pixels-devtools.service")
    finally:
        in_sandbox(INSTANCE, "systemctl stop pv-silent", check=False)
    status = box_.status()
    assert status["state"] == "failed" and status["failed_steps"] == ["node"], status
    assert "interrupted" in status["steps"][0]["log_tail"]
    # the next play runs it again
    run = box_.devtools(pixels_devtools_installer="npm")
    assert run.rc == 0 and run.changed > 0
    status, _seen = box_.wait(timeout=600)
    assert status["state"] == "done", status
