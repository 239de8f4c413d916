"""The incus_host role's install steps on a real Debian 12 (a sandbox of the test project, over the
collection's connection plugin): the storage tools for simple btrfs quotas come from
bookworm-backports, added as a source and refreshed before apt installs with that default
release, both when btrfs-progs is missing and when Debian's older one (6.2, which has no simple
quotas) is installed; a second run changes nothing; with full quotas the older one stays.

Incus itself is not installed here (incus_host_packages is empty: the fresh-host test installs it
on Debian 12 and 13); the sandbox reaches Debian's mirror over plain HTTP through the test
bridge's NAT. About 50 s, mostly apt.
"""

import pytest

from conftest import in_sandbox
from test_connection import host_line, sandbox, write_inventory

PLAY = """
- hosts: sandboxes
  gather_facts: false
  tasks:
    - name: Facts the role's install steps use
      ansible.builtin.setup:
        gather_subset: ['!all', '!min', 'distribution', 'platform']
    - name: Install steps of incus_host
      ansible.builtin.include_role:
        name: homelab.pixels.incus_host
        tasks_from: install.yml
"""


def run_install(ansible, inventory, check=False, **extra):
    extra = {"incus_host_packages": [], "incus_host__storage_driver": "btrfs", **extra}
    return ansible.playbook(PLAY, extra_vars=extra, inventory=inventory, check=check)


def progs_version(instance):
    return in_sandbox(instance, "dpkg-query -W -f='${Version} ${db:Status-Status}' btrfs-progs 2>/dev/null",
                      check=False).strip()


@pytest.mark.slow
def test_btrfs_progs_for_simple_quotas_come_from_backports(ansible, incus, cleanup, tmp_path):
    instance = sandbox(ansible, "hostinstall")
    assert "bookworm" in in_sandbox(instance, "cat /etc/os-release")
    inventory = write_inventory(tmp_path, host_line("hostinstall", pixels_instance=instance))
    in_sandbox(instance, "rm -f /etc/apt/sources.list.d/*backports* && apt-get purge -y -q btrfs-progs "
                         ">/dev/null 2>&1; true")
    assert not progs_version(instance).endswith("installed")

    # check mode: says what it would install, changes nothing
    run = run_install(ansible, inventory, check=True)
    assert run.rc == 0, run.stdout[-3000:]
    said = str(run.result("homelab.pixels.incus_host : Report the packages that would be installed", "hostinstall").get("msg"))
    assert "would install btrfs-progs from bookworm-backports" in " ".join(said.split()), said
    assert not in_sandbox(instance, "ls /etc/apt/sources.list.d/").strip().count("backports")

    # missing: installed from backports (the lists refreshed after the source was added)
    run = run_install(ansible, inventory)
    assert run.rc == 0, run.stdout[-3000:]
    version = progs_version(instance)
    assert "bpo12" in version and version.endswith(" installed"), version
    assert "simple" in in_sandbox(instance, "btrfs quota enable --help")

    # a second run changes nothing
    run = run_install(ansible, inventory)
    assert run.rc == 0 and run.changed == 0, run.stdout[-3000:]

    # Debian's own 6.2: kept with full quotas, upgraded from backports with simple ones
    in_sandbox(instance, "apt-get install -y -q --allow-downgrades btrfs-progs/bookworm >/dev/null")
    old = progs_version(instance)
    assert old.startswith("6.2") and "bpo" not in old, old
    run = run_install(ansible, inventory, incus_host_btrfs_quota="full")
    assert run.rc == 0 and run.changed == 0, run.stdout[-3000:]
    assert progs_version(instance) == old
    run = run_install(ansible, inventory)
    assert run.rc == 0 and run.changed > 0, run.stdout[-3000:]
    assert "bpo12" in progs_version(instance)
