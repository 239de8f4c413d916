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

from conftest import in_sandbox, incus_cli, wait_booted, wait_for

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
    assert config.startswith(f'# BEGIN homelab.pixels console\nHost px-*\nInclude "{console["home"]}/pixels/hosts/*.conf"\n'
                             'Host *\n# END homelab.pixels console\n')
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


FORGED_ADDRESS = "10.0.0.1$(id>/tmp/px-forged) extra words"
FORGED_KEY = "ssh-ed25519 AAAA$(id>/tmp/px-forged)"
USER_CONFIG = "Host other\n    HostName 192.0.2.7\n    User someone\n"


def files_of(directory):
    """Every file under directory: relative path -> (mode, bytes)."""
    return {str(path.relative_to(directory)): (path.stat().st_mode, path.read_bytes())
            for path in sorted(directory.rglob("*")) if path.is_file()}


def ssh_config(config, host):
    """`ssh -G host` with config: its settings, lowercased keys (fails the test if ssh refuses the file)."""
    proc = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def forge(instance, tools, output):
    """Root in the sandbox replaces each of tools (where it is on PATH) with a script printing output."""
    in_sandbox(instance, f"cat > /root/forged <<'EOF'\n#!/bin/sh\necho '{output}'\nEOF\nchmod 755 /root/forged")
    in_sandbox(instance, "set -e; for tool in " + " ".join(tools) + "; do path=$(command -v $tool); "
                         "[ -e $path.real ] || mv $path $path.real; cp /root/forged $path; done")


def unforge(instance, tools):
    in_sandbox(instance, "for tool in " + " ".join(tools) + "; do path=$(command -v $tool); "
                         "[ -e $path.real ] && mv -f $path.real $path; done; true")


def test_forged_probe_cannot_change_the_controllers_ssh(ansible, incus, cleanup, tmp_path):
    """Root in the sandbox forges what the console role's probe reads: the address (ip, awk) and the
    host key (head, cut, cat). The controller's SSH files stay as they were, the HostName is the address
    Incus reports, a forged key fails the task naming the sandbox, and ssh to other hosts still works."""
    instance = "px-cs-forge"
    result = ansible.module("pixels_container", name="cs-forge")
    assert not result.get("failed"), result
    wait_booted(instance)
    address = incus_cli("list", instance, "--format", "json", "-c", "4").stdout
    home = tmp_path / "home"
    home.mkdir()
    (home / "config").write_text(USER_CONFIG)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[sandboxes]\ncs-forge ansible_connection=homelab.pixels.incus\n")
    extra = {"pixels_console_dir": str(home / "pixels"), "pixels_console_ssh_config": str(home / "config")}
    first = ansible.playbook(CONSOLE_PLAY, extra_vars=extra, inventory=str(inventory))
    assert first.rc == 0, first.stdout
    reported = ansible.module("pixels_container_info", name="cs-forge")["sandboxes"][0]["ipv4"][0]
    assert reported in address
    assert ssh_config(home / "config", instance)["hostname"] == reported
    before = files_of(home)

    # The address: whatever `ip` and `awk` print in the sandbox is not used.
    forge(instance, ["ip", "awk"], FORGED_ADDRESS)
    assert in_sandbox(instance, "ip -4 -o addr show | awk '{print}'").strip() == FORGED_ADDRESS
    run = ansible.playbook(CONSOLE_PLAY, extra_vars=extra, inventory=str(inventory))
    assert run.rc == 0 and run.changed == 0, run.stdout
    assert files_of(home) == before
    assert ssh_config(home / "config", instance)["hostname"] == reported

    # The host key: a forged line fails the task naming the sandbox, and nothing is written.
    forge(instance, ["head", "cut", "cat"], FORGED_KEY)
    assert in_sandbox(instance, "head -n 1 /etc/ssh/ssh_host_ed25519_key.pub").strip() == FORGED_KEY
    run = ansible.playbook(CONSOLE_PLAY, extra_vars=extra, inventory=str(inventory))
    assert run.rc != 0, run.stdout
    assert f"The SSH host key that {instance} reported is not a host key" in run.stdout, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert files_of(home) == before
    other = ssh_config(home / "config", "other")
    assert (other["hostname"], other["user"]) == ("192.0.2.7", "someone")
    assert ssh_config(home / "config", instance)["hostname"] == reported
    unforge(instance, ["ip", "awk", "head", "cut", "cat"])


def test_bad_settings_write_nothing(ansible, console, tmp_path):
    """An address or path that does not fit into one line of ssh_config is refused, naming the variable."""
    extra = {**console["extra"], "pixels_console_dir": str(tmp_path / "px"), "pixels_console_ssh_config": str(tmp_path / "c")}
    for bad, needle in [({"pixels_console_address": "10.0.0.1 ProxyCommand=id"}, "(pixels_console_address)"),
                        ({"pixels_console_identity_file": '/tmp/k"\nHost *'}, "pixels_console_identity_file"),
                        ({"pixels_console_user": "pixel extra"}, "pixels_console_user")]:
        run = ansible.playbook(CONSOLE_PLAY, extra_vars={**extra, **bad}, inventory=console["inventory"])
        assert run.rc != 0 and needle in run.stdout and INSTANCE in run.stdout, run.stdout[-3000:]
        assert "Traceback" not in run.stdout + run.stderr
        assert not any(tmp_path.iterdir()), list(tmp_path.rglob("*"))
    good = ansible.playbook(CONSOLE_PLAY, extra_vars={**extra, "pixels_console_address": "sandbox.example.lan"},
                            inventory=console["inventory"])
    assert good.rc == 0, good.stdout[-3000:]
    assert ssh_config(tmp_path / "c", INSTANCE)["hostname"] == "sandbox.example.lan"
