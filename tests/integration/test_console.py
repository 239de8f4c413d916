"""Persistent sessions and the SSH console against a real sandbox, with the real ssh client.

The sandbox is provisioned by homelab.pixels.provision (pixel, its key, sshd, AcceptEnv), then
homelab.pixels.sessions and homelab.pixels.console run on it; `ssh -F <config> px-...` then
logs in exactly as a user's `ssh px-mybox` would.
"""

import os
import queue
import subprocess
import threading
import time

import pytest

from conftest import in_sandbox, incus_cli, wait_for

NAME = "cs-box"
INSTANCE = "px-" + NAME
SESSION_ONLY = "session-secret-4711"
FORWARDED = "forwarded-secret-0815"

PLAY = """
- hosts: sandboxes
  gather_facts: false
  roles:
    - role: homelab.pixels.provision
      when: provision | default(true)
    - homelab.pixels.sessions
    - homelab.pixels.console
"""
CONSOLE_PLAY = "- hosts: sandboxes\n  gather_facts: false\n  roles: [homelab.pixels.console]\n"


class Login:
    """An interactive `ssh -tt` session whose output is read in the background."""

    def __init__(self, config, host):
        self.proc = subprocess.Popen(["ssh", "-F", config, "-tt", host], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = queue.Queue()
        self.seen = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for chunk in iter(lambda: os.read(self.proc.stdout.fileno(), 4096), b""):
            self.output.put(chunk)

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\r")
        self.proc.stdin.flush()

    def expect(self, needle, timeout=30):
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.seen:
            try:
                self.seen += self.output.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{needle!r} not seen; got {self.seen[-2000:]!r}") from None
        return self.seen.decode(errors="replace")

    def drop(self):
        """Disconnect the way a closed laptop lid does: the client just dies."""
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def console(ansible, incus, tmp_path_factory):
    home = tmp_path_factory.mktemp("console")
    key = home / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    result = ansible.module("pixels_container", name=NAME)
    assert not result.get("failed"), result
    inventory = home / "inventory.ini"
    inventory.write_text(f"[sandboxes]\n{NAME} ansible_connection=homelab.pixels.incus pixels_instance={INSTANCE} "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    extra = {
        "pixels_ssh_keys": [(home / "id_ed25519.pub").read_text().strip()],
        "pixels_env": {"PX_FORWARDED": {"forward": True},
                       "PX_SESSION": {"value": SESSION_ONLY, "session_only": True},
                       "PX_IMAGE": "image-value"},
        "pixels_console_dir": str(home / "pixels"),
        "pixels_console_ssh_config": str(home / "config"),
        "pixels_console_identity_file": str(key),
    }
    run = ansible.playbook(PLAY, extra_vars=extra, inventory=str(inventory))
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    yield {"home": home, "config": str(home / "config"), "extra": extra, "inventory": str(inventory), "first": run}
    incus_cli("delete", "--force", INSTANCE, check=False)


def ssh(console, *command, env=None, check=True):
    proc = subprocess.run(["ssh", "-F", console["config"], f"{INSTANCE}.exec", *command], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                          check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_config_include_and_pinned_key(console):
    config = (console["home"] / "config").read_text()
    assert config.startswith("# BEGIN homelab.pixels console\nInclude ")
    host_conf = (console["home"] / "pixels" / "hosts" / f"{INSTANCE}.conf")
    assert oct(host_conf.stat().st_mode & 0o777) == "0o600"
    text = host_conf.read_text()
    assert "StrictHostKeyChecking yes" in text and "RemoteCommand pixels-session attach console" in text
    pinned = (console["home"] / "pixels" / "known_hosts" / INSTANCE).read_text().split()
    key = in_sandbox(INSTANCE, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()
    assert pinned == [INSTANCE] + key[:2]
    assert ssh(console, "id", "-un").stdout.strip() == "pixel"


def test_session_survives_a_disconnect(console):
    first = Login(console["config"], INSTANCE)
    first.expect("[console]")  # tmux's status line: the session is up and reads the keyboard
    first.send("echo $$ > /tmp/console-pid; echo ready-$((40+2))")
    first.expect("ready-42")
    first.drop()
    # tmux notices the dropped client when sshd closes its terminal, a moment later
    wait_for(lambda: ssh(console, "pixels-session", "list").stdout.startswith("console detached "),
             what="pixels-session list to show the console detached")
    second = Login(console["config"], INSTANCE)
    second.expect("[console]")
    second.send('echo "same-$(cat /tmp/console-pid)-$$-shell"')
    out = second.expect("-shell\r")
    second.drop()
    pids = out.rsplit("same-", 1)[1].split("-shell")[0].split("-")
    assert pids[0] == pids[1], out


def test_named_sessions_and_bad_names(console):
    ssh(console, "tmux", "-f", "/etc/pixels/tmux.conf", "new-session", "-d", "-s", "build")
    assert "build detached " in ssh(console, "pixels-session", "list").stdout
    ssh(console, "pixels-session", "kill", "build")
    assert "build" not in ssh(console, "pixels-session", "list").stdout
    bad = ssh(console, "pixels-session", "attach", "'a;b'", check=False)
    assert bad.returncode == 2 and "not a session name" in bad.stderr


def test_session_variables_reach_the_session_not_the_disk(console):
    out = ssh(console, "echo", "$PX_SESSION/$PX_FORWARDED/$PX_IMAGE", env={"PX_FORWARDED": FORWARDED}).stdout
    assert out.strip() == f"{SESSION_ONLY}/{FORWARDED}/image-value"
    # Nothing of the session-only or forwarded values was written in the sandbox.
    found = in_sandbox(INSTANCE, f"grep -rIls -e {SESSION_ONLY} -e {FORWARDED} /etc /home /root /var/lib /usr/local "
                       "/tmp || true")
    assert found.strip() == ""
    assert "PX_IMAGE=" in in_sandbox(INSTANCE, "cat /etc/environment")


def test_second_run_changes_nothing(ansible, console):
    run = ansible.playbook(PLAY, extra_vars=console["extra"], inventory=console["inventory"])
    assert run.rc == 0 and run.changed == 0, [task for task, host, result in run.results if result.get("changed")]


def test_recreated_sandbox_is_refused_then_repinned(ansible, console):
    in_sandbox(INSTANCE, "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A -q && systemctl restart ssh")
    refused = ssh(console, "true", check=False)
    assert refused.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    run = ansible.playbook(PLAY, extra_vars={**console["extra"], "provision": False}, inventory=console["inventory"])
    assert run.rc == 0 and run.changed == 1, run.stdout
    assert ssh(console, "true").returncode == 0


def test_absent_removes_the_console(ansible, console, tmp_path):
    extra = {**console["extra"], "pixels_console_dir": str(tmp_path), "pixels_console_include": False}
    assert ansible.playbook(CONSOLE_PLAY, extra_vars=extra, inventory=console["inventory"]).rc == 0
    assert (tmp_path / "hosts" / f"{INSTANCE}.conf").exists()
    run = ansible.playbook(CONSOLE_PLAY, extra_vars={**extra, "pixels_console_state": "absent"}, inventory=console["inventory"])
    assert run.rc == 0 and run.changed == 1
    assert not (tmp_path / "hosts" / f"{INSTANCE}.conf").exists()
    assert not (tmp_path / "known_hosts" / INSTANCE).exists()


def test_bad_input(ansible, console, tmp_path):
    no_zmx = ansible.playbook(PLAY, extra_vars={**console["extra"], "provision": False, "pixels_sessions_backend": "zmx",
                                                "pixels_sessions_zmx_binary": str(tmp_path / "missing")},
                              inventory=console["inventory"])
    assert no_zmx.rc != 0 and "pixels_sessions_backend=zmx needs pixels_sessions_zmx_binary" in no_zmx.stdout
    assert "Traceback" not in no_zmx.stdout + no_zmx.stderr
    wrong = ansible.playbook(PLAY, extra_vars={**console["extra"], "provision": False, "pixels_sessions_backend": "screen"},
                             inventory=console["inventory"])
    assert wrong.rc != 0 and "pixels_sessions_backend" in wrong.stdout and "screen" in wrong.stdout


def test_console_needs_sshd(ansible, incus, cleanup, tmp_path):
    result = ansible.module("pixels_container", name="cs-nokey")
    assert not result.get("failed"), result
    # after first boot made the keys, so they don't come back
    in_sandbox("px-cs-nokey", "systemctl is-system-running --wait >/dev/null; rm -f /etc/ssh/ssh_host_ed25519_key.pub")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[sandboxes]\ncs-nokey ansible_connection=homelab.pixels.incus\n")
    extra = {"pixels_console_dir": str(tmp_path / "px"), "pixels_console_ssh_config": str(tmp_path / "config")}
    run = ansible.playbook(CONSOLE_PLAY, extra_vars=extra, inventory=str(inventory))
    assert run.rc != 0 and "px-cs-nokey has no SSH host key (run the homelab.pixels.provision role first" in run.stdout
