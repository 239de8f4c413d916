"""pixels_container and pixels_container_info against a real Incus."""

import re
import subprocess

import isolated
from conftest import PROJECT, in_sandbox, incus_cli, snapshot_names, wait_for


def test_create_from_image_then_idempotent(ansible, incus, cleanup):
    result = ansible.module("pixels_container", name="life", cpu=1, memory=384)
    assert result["changed"] and not result.get("failed"), result
    box = result["sandbox"]
    assert (box["name"], box["instance"], box["status"]) == ("life", "px-life", "running")
    assert box["ipv4"] and box["ipv4"][0].startswith("10.")
    assert (box["cpu"], box["memory"], box["image"]) == (1, 384, "debian/12")
    assert box["created_at"]
    instance = incus.instances.get("px-life")
    assert instance.status == "Running"
    assert (instance.config["limits.cpu"], instance.config["limits.memory"]) == ("1", "384MiB"), instance.config
    addresses = [a["address"] for a in instance.state().network["eth0"]["addresses"] if a["family"] == "inet"]
    assert box["ipv4"] == addresses, (box["ipv4"], addresses)

    again = ansible.module("pixels_container", name="life", cpu=1, memory=384)
    assert again["changed"] is False, again
    assert again["sandbox"]["ipv4"] == box["ipv4"]

    info = ansible.module("pixels_container_info", name="life")
    assert info["exists"] and info["sandboxes"][0]["instance"] == "px-life"


def test_stop_start_restart(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cycle", state="stopped")
    assert incus.instances.get("px-cycle").status == "Stopped"
    assert ansible.module("pixels_container", name="cycle", state="stopped")["changed"] is False

    started = ansible.module("pixels_container", name="cycle", state="started")
    assert started["changed"] and started["sandbox"]["status"] == "running" and started["sandbox"]["ipv4"]
    assert incus.instances.get("px-cycle").status == "Running"
    assert ansible.module("pixels_container", name="cycle", state="started")["changed"] is False
    assert ansible.module("pixels_container", name="cycle", state="present")["changed"] is False

    boot_before = in_sandbox("px-cycle", "cat /proc/sys/kernel/random/boot_id; stat -c %Y /proc/1")
    restarted = ansible.module("pixels_container", name="cycle", state="restarted")
    assert restarted["changed"] and restarted["sandbox"]["status"] == "running"
    assert in_sandbox("px-cycle", "cat /proc/sys/kernel/random/boot_id; stat -c %Y /proc/1") != boot_before

    stopped = ansible.module("pixels_container", name="cycle", state="stopped")
    assert stopped["changed"] and stopped["sandbox"]["status"] == "stopped"
    assert incus.instances.get("px-cycle").status == "Stopped"

    gone = ansible.module("pixels_container", name="cycle", state="absent")
    assert gone["changed"] and gone["sandbox"] == {}
    assert not incus.instances.exists("px-cycle")
    assert ansible.module("pixels_container", name="cycle", state="absent")["changed"] is False


def test_check_mode_changes_nothing(ansible, incus, cleanup):
    created = ansible.adhoc("pixels_container", check=True, diff=True, name="ghost")
    assert created["changed"] and created["diff"]["after"]["state"] == "running", created
    assert not incus.instances.exists("px-ghost")

    ansible.module("pixels_container", name="ghost", cpu=1, memory=256)
    resized = ansible.adhoc("pixels_container", check=True, name="ghost", memory=320)
    assert resized["changed"] and resized["diff"]["after"]["memory"] == 320
    stopped = ansible.adhoc("pixels_container", check=True, name="ghost", state="stopped")
    assert stopped["changed"]
    removed = ansible.adhoc("pixels_container", check=True, name="ghost", state="absent")
    assert removed["changed"]
    instance = incus.instances.get("px-ghost")
    assert instance.status == "Running" and instance.config["limits.memory"] == "256MiB"


def test_limits_reconciled_with_diff(ansible, incus, cleanup):
    ansible.module("pixels_container", name="sized", cpu=1, memory=256)
    result = ansible.adhoc("pixels_container", diff=True, name="sized", memory=448)
    assert result["changed"]
    assert result["diff"]["before"]["memory"] == 256 and result["diff"]["after"]["memory"] == 448
    assert incus.instances.get("px-sized").config["limits.memory"] == "448MiB"
    # applied live: the sandbox's cgroup (v2 or v1) shows the new limit
    limit = in_sandbox("px-sized", "cat /sys/fs/cgroup/memory.max 2>/dev/null"
                       " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert limit.strip() == str(448 * 1048576)
    assert ansible.module("pixels_container", name="sized", memory=448)["changed"] is False


def test_clone_from_checkpoint_and_current_state(ansible, incus, golden, cleanup):
    in_sandbox("px-golden", "echo later > /root/after")
    clone = ansible.module("pixels_container", name="fromcp", source="golden:ready")
    assert clone["changed"] and clone["sandbox"]["source"] == "golden:ready", clone
    assert in_sandbox("px-fromcp", "cat /root/marker").strip() == "ready"
    assert in_sandbox("px-fromcp", "test -e /root/after && echo yes || echo no").strip() == "no"

    current = ansible.module("pixels_container", name="fromnow", source="golden")
    assert current["changed"] and current["sandbox"]["source"] == "golden"
    assert in_sandbox("px-fromnow", "cat /root/after").strip() == "later"
    # the temporary snapshot is gone again; the real checkpoint stays
    assert snapshot_names(incus, "px-golden") == ["ready"]
    # clones never carry the source's MAC address
    macs = {n: incus.instances.get(n).config["volatile.eth0.hwaddr"] for n in ("px-golden", "px-fromcp", "px-fromnow")}
    assert len(set(macs.values())) == 3, macs
    in_sandbox("px-golden", "rm -f /root/after")


IDENTITY = ("cat /etc/machine-id; for t in rsa ecdsa ed25519; do cut -d' ' -f1-2 /etc/ssh/ssh_host_${t}_key.pub; "
            "done; stat -c '%a %U' /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub")
KEYS_MATCH = ("for t in rsa ecdsa ed25519; do k=/etc/ssh/ssh_host_${t}_key; "
              "test \"$(ssh-keygen -y -f $k | cut -d' ' -f1-2)\" = \"$(cut -d' ' -f1-2 $k.pub)\"; done; /usr/sbin/sshd -t")


def served_host_key(address):
    """The ed25519 host key sshd at ``address`` presents, once it answers."""
    def served():
        out = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", address], capture_output=True,
                             text=True, check=False).stdout
        # (OpenSSH 10 prints its "# address:22 SSH-2.0-..." comment on stdout too)
        keys = [line.split()[1:3] for line in out.splitlines() if line.strip() and not line.startswith("#")]
        return keys[0] if keys else None
    return " ".join(wait_for(served, timeout=60, what=f"sshd at {address}", interval=0.2))


def identity_of(name):
    """machine-id, the three public host keys and the ed25519 key files' modes, once made."""
    wait_for(lambda: in_sandbox(f"px-{name}", "test -s /etc/ssh/ssh_host_rsa_key.pub && test -s /etc/ssh/ssh_host_ecdsa_key.pub "
                                              "&& test -s /etc/ssh/ssh_host_ed25519_key.pub && echo made", check=False),
             timeout=60, what=f"the host keys of px-{name}", interval=0.2)
    return in_sandbox(f"px-{name}", IDENTITY).split("\n")


def test_sandboxes_and_clones_get_their_own_host_keys_and_machine_id(ansible, incus, cleanup):
    assert ansible.module("pixels_container", name="idsrc")["changed"]
    seen = set(identity_of("idsrc")[:4])
    assert ansible.module("pixels_checkpoint", name="idsrc", label="keys")["changed"]
    # a second sandbox from the image, then clones of a checkpoint and of the current state
    for name, origin in (("idimage", None), ("idone", "idsrc:keys"), ("idtwo", "idsrc:keys"), ("idnow", "idsrc")):
        sandbox = ansible.module("pixels_container", name=name, **({"source": origin} if origin else {}))
        assert sandbox["changed"], sandbox
        identity = identity_of(name)
        assert re.fullmatch(r"[0-9a-f]{32}", identity[0]), identity
        assert identity[4:6] == ["600 root", "644 root"], identity
        assert not seen & set(identity[:4]), (name, identity, seen)  # nothing shared with any other
        seen |= set(identity[:4])
        in_sandbox(f"px-{name}", KEYS_MATCH)  # each private key matches its public key; sshd accepts them
        assert served_host_key(sandbox["sandbox"]["ipv4"][0]) == identity[3]


def test_parallel_clones_get_distinct_macs_and_addresses(ansible, incus, golden, cleanup):
    run = ansible.playbook("""
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: clone
              homelab.pixels.pixels_container:
                name: "par{{ item }}"
                source: golden:ready
              loop: [1, 2, 3, 4, 5]
              async: 300
              poll: 0
              register: jobs
            - name: wait
              ansible.builtin.async_status:
                jid: "{{ item.ansible_job_id }}"
              loop: "{{ jobs.results }}"
              register: done
              until: done.finished
              retries: 300
              delay: 1
    """)
    assert run.rc == 0, run.stdout + run.stderr
    boxes = [r["sandbox"] for r in run.result("wait")["results"]]
    assert sorted(b["name"] for b in boxes) == [f"par{i}" for i in range(1, 6)]
    addresses = [b["ipv4"][0] for b in boxes]
    macs = [incus.instances.get(f"px-par{i}").config["volatile.eth0.hwaddr"] for i in range(1, 6)]
    assert len(set(addresses)) == 5, addresses
    assert len(set(macs)) == 5, macs
    for i in range(1, 6):
        assert in_sandbox(f"px-par{i}", "cat /root/marker").strip() == "ready"


def test_info_lists_only_sandboxes(ansible, incus, golden, cleanup):
    incus_cli("init", "debian/12", "not-ours")
    names = [s["name"] for s in ansible.module("pixels_container_info")["sandboxes"]]
    assert "golden" in names and "not-ours" not in names
    assert ansible.module("pixels_container_info", name="nothere")["exists"] is False


def test_cpu_reconciled_on_an_existing_sandbox(ansible, incus, cleanup):
    ansible.module("pixels_container", name="cpus", cpu=1, memory=256)
    assert in_sandbox("px-cpus", "nproc").strip() == "1"
    result = ansible.adhoc("pixels_container", diff=True, name="cpus", cpu=2)
    assert result["changed"] and (result["diff"]["before"]["cpu"], result["diff"]["after"]["cpu"]) == (1, 2)
    assert incus.instances.get("px-cpus").config["limits.cpu"] == "2"
    assert in_sandbox("px-cpus", "nproc").strip() == "2"  # applied live
    assert ansible.module("pixels_container", name="cpus", cpu=2)["changed"] is False


def test_pool_of_a_new_sandbox(ansible, incus, cleanup):
    """pool= puts the root disk on that pool; an unknown pool fails naming the option."""
    pool = f"{PROJECT}-p"
    subprocess.run(["incus", "storage", "delete", pool], capture_output=True, check=False)
    subprocess.run(["incus", "storage", "create", pool, "dir", "--description", isolated.MARK],
                   capture_output=True, check=True)
    try:
        result = ansible.module("pixels_container", name="onpool", pool=pool, state="stopped")
        assert result["changed"] and not result.get("failed"), result
        instance = incus.instances.get("px-onpool")
        assert instance.expanded_devices["root"]["pool"] == pool, instance.expanded_devices
        bad = ansible.module("pixels_container", name="nopool", pool=f"{PROJECT}-no-such-pool")
        assert bad.get("failed") and "pool" in bad["msg"] and "Traceback" not in bad["msg"], bad
        assert not incus.instances.exists("px-nopool")
    finally:
        incus_cli("delete", "--force", "px-onpool", check=False)
        subprocess.run(["incus", "storage", "delete", pool], capture_output=True, check=False)


# A shutdown job that takes 20 s and leaves a mark when it ends: a clean stop waits for it.
SLOW_STOP_UNIT = """[Unit]
Description=slow to stop
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'sleep 20; touch /root/stopped-cleanly'
TimeoutStopSec=120
[Install]
WantedBy=multi-user.target
"""


def test_stop_timeout_forces_a_slow_shutdown(ansible, incus, cleanup):
    ansible.module("pixels_container", name="slowstop")
    in_sandbox("px-slowstop", f"cat > /etc/systemd/system/slow-stop.service <<'EOF'\n{SLOW_STOP_UNIT}EOF\n"
                              "systemctl daemon-reload && systemctl enable --now slow-stop.service")
    stopped = ansible.module("pixels_container", name="slowstop", state="stopped", stop_timeout=2)
    assert stopped["changed"] and incus.instances.get("px-slowstop").status == "Stopped", stopped
    ansible.module("pixels_container", name="slowstop")
    assert in_sandbox("px-slowstop", "test -e /root/stopped-cleanly && echo yes || echo no").strip() == "no"
    # the default (30 s) lets it finish
    ansible.module("pixels_container", name="slowstop", state="stopped")
    ansible.module("pixels_container", name="slowstop")
    assert in_sandbox("px-slowstop", "test -e /root/stopped-cleanly && echo yes || echo no").strip() == "yes"


def test_wait_false_does_not_wait_for_an_address(ansible, incus, cleanup):
    """A sandbox that never gets an address (no DHCP on eth0): wait=false starts it and returns;
    the default waits and fails after wait_timeout, naming the sandbox."""
    ansible.module("pixels_container", name="noaddr")
    in_sandbox("px-noaddr", "printf 'auto lo\\niface lo inet loopback\\n' > /etc/network/interfaces")
    ansible.module("pixels_container", name="noaddr", state="stopped")
    started = ansible.module("pixels_container", name="noaddr", state="started", wait=False)
    assert started["changed"] and not started.get("failed"), started
    assert incus.instances.get("px-noaddr").status == "Running"
    assert started["sandbox"]["ipv4"] == []
    waited = ansible.module("pixels_container", name="noaddr", state="restarted", wait_timeout=5)
    assert waited.get("failed") and "px-noaddr" in waited["msg"] and "wait_timeout" in waited["msg"], waited
