"""The incus_host role's kernel link and FIFO protections, on this machine's kernel: its
protections tasks only, with the boot-time file in a directory of the test's own.

The values are global (every container has them) and the role turns them on for users, so the
test leaves them on; to be able to fail, it turns them off first."""

from pathlib import Path

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


def proc(key):
    return Path("/proc/sys", *key.split("."))


def values():
    return {key: int(proc(key).read_text()) for key in WANTED}


def test_protections_on_now_and_at_boot(ansible, tmp_path):
    conf = tmp_path / "sysctl.d" / "60-pixels-protections.conf"
    extra = {"incus_host_protections_file": str(conf)}
    for key in WANTED:
        proc(key).write_text("0\n")
    checked = ansible.playbook(PLAY, extra_vars=extra, check=True)
    assert checked.rc == 0, checked.stdout[-3000:]
    changed = {task.split(" : ")[-1] for task, _host, result in checked.results if result.get("changed")}
    assert {"Keep the kernel's link and FIFO protections on across reboots",
            "Turn the kernel's link and FIFO protections on now"} <= changed, changed
    assert values() == dict.fromkeys(WANTED, 0) and not conf.exists()

    run = ansible.playbook(PLAY, extra_vars=extra)
    assert run.rc == 0 and not run.failed, run.stdout[-3000:]
    assert values() == WANTED
    lines = [line for line in conf.read_text().splitlines() if line and not line.startswith("#")]
    assert dict(line.split(" = ") for line in lines) == {key: str(value) for key, value in WANTED.items()}
    assert oct(conf.stat().st_mode & 0o777) == "0o644"

    again = ansible.playbook(PLAY, extra_vars=extra)
    assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    assert ansible.playbook(PLAY, extra_vars=extra, check=True).changed == 0
