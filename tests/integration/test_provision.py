"""The homelab.pixels.provision role inside a real sandbox, over the homelab.pixels.incus connection.

One sandbox starts with an image-style uid-1000 user; the role turns it into pixel, and the
checks log in over SSH with a key generated here (paramiko, no ssh client needed).
"""

import os
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import GATEWAY, in_sandbox, incus_cli, wait_for
from test_connection import host_line, no_traceback, write_inventory

NAME = "pv-prov"
INSTANCE = "px-" + NAME
HOST_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The bridge's resolver answers; TEST-NET-1 only shows the order is kept.
DNS = [GATEWAY, "192.0.2.53"]
SECRET = "s3ssion-only-Zq81"
FORWARDED = "f0rwarded-Kx27"

PLAY = """
- hosts: sandboxes
  gather_facts: false
  roles:
    - role: homelab.pixels.provision
"""


def make_key(directory, name="id_ed25519"):
    """An ed25519 key pair in `directory`; (private key path, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = directory / name
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public = public.decode() + " pixels-test"
    (directory / (name + ".pub")).write_text(public + "\n")
    return str(private), public


def ipv4(instance):
    def addresses():
        return incus_cli("list", instance, "-c4", "-f", "csv").stdout.split()
    return wait_for(addresses, timeout=60, what=f"an IPv4 address on {instance}", interval=0.2)[0]


def ssh(instance, user, key, command, env=None):
    """Run `command` over SSH as `user` (env sent like SendEnv/SetEnv); (rc, stdout, stderr)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(ipv4(instance), username=user, key_filename=key, look_for_keys=False, allow_agent=False,
                   timeout=20)
    try:
        _stdin, stdout, stderr = client.exec_command(command, environment=env, timeout=120)
        rc = stdout.channel.recv_exit_status()
        return rc, stdout.read().decode(), stderr.read().decode()
    finally:
        client.close()


def provision(ansible, tmp_path, instance, extra_vars, env=None, play=PLAY):
    inventory = write_inventory(tmp_path, host_line(instance[3:], pixels_instance=instance), name="provision.ini")
    run = ansible.playbook(play, extra_vars=extra_vars, inventory=inventory, env=env)
    no_traceback(run)
    return run


def provision_vars(public_key):
    return {
        "pixels_ssh_keys": [public_key],
        "pixels_dns": DNS,
        "pixels_env": {
            "EDITOR": "vim",
            "GREETING": "hello world",
            "PIXELS_FWD": {"forward": True},
            "PIXELS_SECRET": {"value": SECRET, "session_only": True},
        },
        "pixels_ca_certificates": [HOST_BUNDLE],
    }


@pytest.fixture(scope="module")
def sandbox(ansible, incus, tmp_path_factory):
    """A sandbox with an image's uid-1000 user, provisioned once; (instance, key, vars, first run)."""
    result = ansible.module("pixels_container", name=NAME, cpu=1, memory=1024)
    assert not result.get("failed"), result
    in_sandbox(INSTANCE, "useradd -m -u 1000 -s /bin/sh debian && echo mine > /home/debian/keep.txt"
                         " && chown debian: /home/debian/keep.txt")
    workdir = tmp_path_factory.mktemp("provision")
    key, public = make_key(workdir)
    variables = provision_vars(public)
    run = provision(ansible, workdir, INSTANCE, variables)
    yield {"instance": INSTANCE, "key": key, "vars": variables, "run": run, "workdir": workdir}
    incus_cli("delete", "--force", INSTANCE, check=False)


def test_first_run(sandbox):
    run = sandbox["run"]
    assert run.rc == 0 and not run.failed, run.stdout[-3000:] + run.stderr
    assert run.changed > 0


def test_pixel_replaces_the_uid_1000_user(sandbox):
    out = in_sandbox(INSTANCE, "getent passwd 1000; getent group 1000; getent passwd debian || echo gone;"
                               " stat -c '%U %a' /home/pixel/keep.txt /home/pixel/.ssh /home/pixel/.ssh/authorized_keys")
    lines = out.splitlines()
    assert lines[0].startswith("pixel:x:1000:1000:") and lines[0].endswith(":/home/pixel:/bin/bash"), out
    assert lines[1].startswith("pixel:x:1000:"), out
    assert lines[2] == "gone"
    assert lines[3:] == ["pixel 644", "pixel 700", "pixel 600"]


def test_ssh_login_as_pixel_and_root(sandbox):
    rc, out, err = ssh(INSTANCE, "pixel", sandbox["key"], "id -u; id -g; sudo -n id -un; cat keep.txt")
    assert rc == 0, err
    assert out.split() == ["1000", "1000", "root", "mine"]
    rc, out, err = ssh(INSTANCE, "root", sandbox["key"], "id -un")
    assert (rc, out.strip()) == (0, "root"), err
    assert in_sandbox(INSTANCE, "systemctl is-enabled ssh; systemctl is-active ssh").split() == ["enabled", "active"]


def test_wrong_key_refused(sandbox, tmp_path):
    other, _public = make_key(tmp_path, "other")
    with pytest.raises(paramiko.AuthenticationException):
        ssh(INSTANCE, "pixel", other, "true")


def test_resolved_uses_the_nameservers(sandbox):
    assert in_sandbox(INSTANCE, "resolvectl dns | sed -n 's/^Global: *//p'").split() == DNS
    assert "DNS=" + " ".join(DNS) in in_sandbox(INSTANCE, "cat /etc/systemd/resolved.conf.d/pixels.conf")
    # resolution goes through resolved's stub, with the first server answering
    assert in_sandbox(INSTANCE, "readlink /etc/resolv.conf").strip() == "../run/systemd/resolve/stub-resolv.conf"
    assert in_sandbox(INSTANCE, "getent ahostsv4 deb.debian.org >/dev/null && echo resolved").strip() == "resolved"


def test_environment_in_sessions_and_secrets_not_on_disk(sandbox):
    env_file = in_sandbox(INSTANCE, "cat /etc/environment")
    assert 'EDITOR="vim"' in env_file and 'GREETING="hello world"' in env_file
    assert "PIXELS_SECRET" not in env_file and "PIXELS_FWD" not in env_file
    assert in_sandbox(INSTANCE, "cat /etc/ssh/sshd_config.d/pixels.conf").strip().endswith(
        "AcceptEnv PIXELS_FWD PIXELS_SECRET")
    # What the console role's SendEnv/SetEnv send: accepted by sshd, alongside /etc/environment.
    rc, out, err = ssh(INSTANCE, "pixel", sandbox["key"], 'echo "$EDITOR|$GREETING|$PIXELS_SECRET|$PIXELS_FWD|$OTHER"',
                       env={"PIXELS_SECRET": SECRET, "PIXELS_FWD": FORWARDED, "OTHER": "refused"})
    assert rc == 0, err
    assert out.strip() == f"vim|hello world|{SECRET}|{FORWARDED}|"
    found = in_sandbox(INSTANCE, f"grep -rlF -e {SECRET} -e {FORWARDED} /etc /root /home /var/lib /usr/local /tmp"
                                 " 2>/dev/null || true")
    assert found.strip() == ""


def test_ca_bundle_trusted(sandbox):
    out = in_sandbox(INSTANCE, "ls /usr/local/share/ca-certificates/pixels;"
                               " grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt")
    name, count = out.split()
    assert name == "ca-certificates.crt"
    with open(HOST_BUNDLE) as handle:
        assert int(count) >= handle.read().count("BEGIN CERTIFICATE")
    # HTTPS to the npm registry works only with the host's bundle (see incus-on-ci.md)
    assert in_sandbox(INSTANCE, "curl -fsS -o /dev/null -w '%{http_code}' https://registry.npmjs.org/").strip() == "200"


def test_full_sudo_while_unrestricted(sandbox):
    assert in_sandbox(INSTANCE, "cat /etc/sudoers.d/pixel").strip().endswith("pixel ALL=(ALL) NOPASSWD:ALL")


def test_second_run_changes_and_installs_nothing(ansible, sandbox):
    start = time.perf_counter()
    run = provision(ansible, sandbox["workdir"], INSTANCE, sandbox["vars"])
    quick = time.perf_counter() - start
    assert run.rc == 0 and run.changed == 0, run.stdout[-3000:]
    assert run.result("homelab.pixels.provision : Provision", NAME).get("skipped"), "the quick check should have ended the role"
    # every step again: still nothing to change, apt untouched
    forced = dict(sandbox["vars"], pixels_provision_force=True)
    run = provision(ansible, sandbox["workdir"], INSTANCE, forced)
    assert run.rc == 0 and run.changed == 0, [r[0] for r in run.results if r[2].get("changed")]
    assert run.result("homelab.pixels.provision : Install the missing packages", NAME).get("skipped")
    print(f"quick re-run {quick:.2f} s")


def test_drift_is_repaired(ansible, sandbox):
    in_sandbox(INSTANCE, "echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntruder intruder' >> /root/.ssh/authorized_keys;"
                         " echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntruder intruder' >> /home/pixel/.ssh/authorized_keys;"
                         " echo 'EDITOR=\"nano\"' > /etc/environment")
    run = provision(ansible, sandbox["workdir"], INSTANCE, sandbox["vars"])
    assert run.rc == 0 and run.changed >= 3, run.stdout[-3000:]
    assert "intruder" not in in_sandbox(INSTANCE, "cat /root/.ssh/authorized_keys /home/pixel/.ssh/authorized_keys")
    assert in_sandbox(INSTANCE, "stat -c %U:%a /home/pixel/.ssh/authorized_keys").strip() == "pixel:600"
    assert 'EDITOR="vim"' in in_sandbox(INSTANCE, "cat /etc/environment")


def test_sudo_left_to_restricted_egress(ansible, sandbox):
    in_sandbox(INSTANCE, "mkdir -p /etc/pixels/egress && echo restricted > /etc/pixels/egress/mode"
                         " && echo 'pixel ALL=(root) NOPASSWD: /usr/bin/apt-get' > /etc/sudoers.d/pixel")
    try:
        run = provision(ansible, sandbox["workdir"], INSTANCE, dict(sandbox["vars"], pixels_provision_force=True))
        assert run.rc == 0 and run.changed == 0, run.stdout[-3000:]
        assert in_sandbox(INSTANCE, "cat /etc/sudoers.d/pixel").strip() == "pixel ALL=(root) NOPASSWD: /usr/bin/apt-get"
        in_sandbox(INSTANCE, "echo unrestricted > /etc/pixels/egress/mode")
        run = provision(ansible, sandbox["workdir"], INSTANCE, sandbox["vars"])
        assert run.rc == 0 and run.changed == 1, run.stdout[-3000:]
        assert in_sandbox(INSTANCE, "cat /etc/sudoers.d/pixel").strip().endswith("NOPASSWD:ALL")
    finally:
        in_sandbox(INSTANCE, "rm -rf /etc/pixels/egress", check=False)


def test_dns_back_to_dhcp(ansible, sandbox):
    run = provision(ansible, sandbox["workdir"], INSTANCE, dict(sandbox["vars"], pixels_dns=[]))
    assert run.rc == 0 and run.changed > 0, run.stdout[-3000:]
    assert in_sandbox(INSTANCE, "resolvectl dns | sed -n 's/^Global: *//p'").split() == [GATEWAY]
    assert in_sandbox(INSTANCE, "test -e /etc/systemd/resolved.conf.d/pixels.conf || echo gone").strip() == "gone"


# -- bad input: refused on the controller before anything changes in the sandbox -----------

def failure(run):
    assert run.rc != 0 and run.failed, run.stdout[-3000:]
    failed = [r for r in run.results if r[2].get("failed")]
    assert failed, run.stdout[-3000:]
    result = failed[0][2]
    # a loop's message is in its failed items
    return "\n".join([result.get("msg", "")] + [i.get("msg", "") for i in result.get("results", []) if i.get("failed")])


def test_missing_default_key(ansible, sandbox, tmp_path):
    """No pixels_ssh_keys and no ~/.ssh/id_ed25519.pub on the controller."""
    home = tmp_path / "home"
    home.mkdir()
    before = in_sandbox(INSTANCE, "sha256sum /root/.ssh/authorized_keys")
    run = provision(ansible, tmp_path, INSTANCE, {}, env={"HOME": str(home)})
    msg = failure(run)
    assert "pixels_ssh_keys" in msg and "~/.ssh/id_ed25519.pub" in msg and "ssh-keygen" in msg, msg
    assert in_sandbox(INSTANCE, "sha256sum /root/.ssh/authorized_keys") == before
    # the default works when the file exists
    (home / ".ssh").mkdir()
    _key, public = make_key(home / ".ssh")
    run = provision(ansible, tmp_path, INSTANCE, {"pixels_dns": DNS}, env={"HOME": str(home)})
    assert run.rc == 0, run.stdout[-3000:]
    assert in_sandbox(INSTANCE, "cat /home/pixel/.ssh/authorized_keys").splitlines()[-1] == public
    provision(ansible, sandbox["workdir"], INSTANCE, sandbox["vars"])  # back to the module's key


@pytest.mark.parametrize("override, needles", [
    ({"pixels_ssh_keys": ["/home/me/.ssh/id_ed25519.pub"]}, ["/home/me/.ssh/id_ed25519.pub", "is not an OpenSSH public key"]),
    ({"pixels_env": {"TOKEN": {"forward": "yes"}}}, ["pixels_env.TOKEN: forward", "must be true"]),
    ({"pixels_env": {"9LIVES": "x"}}, ["'9LIVES' is not a valid environment variable name"]),
    ({"pixels_ca_certificates": ["/nonexistent/proxy.pem"]}, ["pixels_ca_certificates", "/nonexistent/proxy.pem"]),
    ({"pixels_ca_certificates": [os.path.abspath(__file__)]}, ["holds no PEM certificate"]),
    ({"pixels_dns": "1.1.1.1"}, ["pixels_dns must be a list"]),
])
def test_bad_input(ansible, sandbox, tmp_path, override, needles):
    run = provision(ansible, tmp_path, INSTANCE, dict(sandbox["vars"], **override))
    msg = failure(run)
    for needle in needles:
        assert needle in msg, msg
