"""The incus_host role's kernel link and FIFO protections and container limits, on this machine's
kernel: its protections tasks only, with the boot-time file in a directory of the test's own.

The values are global (every container has them) and the role sets them for users, so the test
leaves them set; to be able to fail, it turns the protections off and one limit down first."""

from pathlib import Path

import pytest

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: homelab.pixels.incus_host
        tasks_from: protections
"""
WANTED = {"fs.protected_symlinks": 1, "fs.protected_hardlinks": 1, "fs.protected_regular": 2,
          "fs.protected_fifos": 2}
LIMITS = {"fs.inotify.max_user_instances": 1048576, "fs.inotify.max_user_watches": 1048576,
          "fs.inotify.max_queued_events": 1048576, "kernel.keys.maxkeys": 2000, "kernel.keys.maxbytes": 2000000}


def proc(key):
    return Path("/proc/sys", *key.split("."))


def values(keys=tuple(WANTED)):
    return {key: int(proc(key).read_text()) for key in keys}


def test_protections_on_now_and_at_boot(ansible, tmp_path):
    conf = tmp_path / "sysctl.d" / "60-pixels-protections.conf"
    extra = {"incus_host_protections_file": str(conf)}
    try:
        for key in WANTED:
            proc(key).write_text("0\n")
    except OSError as exc:  # a host that is itself a container: /proc/sys is the outer host's
        pytest.skip(f"/proc/sys cannot be written here ({exc.strerror}): the role then says so instead")
    proc("kernel.keys.maxkeys").write_text("200\n")  # the stock value
    checked = ansible.playbook(PLAY, extra_vars=extra, check=True)
    assert checked.rc == 0, checked.stdout[-3000:]
    changed = {task.split(" : ")[-1] for task, _host, result in checked.results if result.get("changed")}
    assert {"Keep the kernel's protections and limits across reboots",
            "Turn the kernel's protections on and raise its limits now"} <= changed, changed
    assert values() == dict.fromkeys(WANTED, 0) and not conf.exists()
    assert values(["kernel.keys.maxkeys"]) == {"kernel.keys.maxkeys": 200}

    run = ansible.playbook(PLAY, extra_vars=extra)
    assert run.rc == 0 and not run.failed, run.stdout[-3000:]
    assert values() == WANTED
    assert all(have >= LIMITS[key] for key, have in values(LIMITS).items()), values(LIMITS)  # raised, never lowered
    lines = [line for line in conf.read_text().splitlines() if line and not line.startswith("#")]
    assert dict(line.split(" = ") for line in lines) == {key: str(value) for key, value in {**WANTED, **LIMITS}.items()}
    assert oct(conf.stat().st_mode & 0o777) == "0o644"

    again = ansible.playbook(PLAY, extra_vars=extra)
    assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    assert ansible.playbook(PLAY, extra_vars=extra, check=True).changed == 0
