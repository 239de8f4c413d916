"""The homelab.pixels.incus connection plugin against the real Incus: playbooks inside sandboxes.

Hosts come from a static inventory (``ansible_connection=homelab.pixels.incus``), as the
homelab.pixels.sandboxes inventory would set them.
"""

import hashlib
import os
import socket
import subprocess
import sys
import time
import warnings

import pytest
from ansible.errors import AnsibleError, AnsibleFileNotFound
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader, init_plugin_loader

from ansible_fixtures import ROOT
from conftest import PROJECT, SOCKET, in_sandbox, incus_cli, wait_for
from tls_fixtures import make_cert

CONNECTION = "homelab.pixels.incus"
# Instance names are DNS names on the shared bridge: runs in other test projects must not clash.
TAG = hashlib.sha256(PROJECT.encode()).hexdigest()[:4]
PIPE = f"conn-pipe-{TAG}"
DIRECT = f"conn-direct-{TAG}"
FILES = f"conn-files-{TAG}"
BIG = f"conn-big-{TAG}"
STREAM = f"conn-stream-{TAG}"
STOPPED = f"conn-stopped-{TAG}"
BAD = f"conn-bad-{TAG}"
FAR = f"conn-far-{TAG}"
GUARD = f"conn-guard-{TAG}"
# TEST-NET-1: nothing answers there, so a task that worked did not go through ansible_host.
UNROUTABLE = "192.0.2.1"


def write_inventory(directory, line, name="inventory.ini"):
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write(f"[sandboxes]\n{line} ansible_python_interpreter=/usr/bin/python3\n")
    return path


def host_line(host, **hostvars):
    hostvars.setdefault("ansible_connection", CONNECTION)
    return host + "".join(f" {key}={value}" for key, value in hostvars.items())


def sandbox(ansible, name, **args):
    result = ansible.module("pixels_container", name=name, **args)
    assert not result.get("failed"), result
    return "px-" + name


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def no_traceback(run):
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr


# -- a playbook as root, as a user, with become -------------------------------------------

PLAY = """\
- hosts: sandboxes
  gather_facts: true
  vars:
    ansible_pipelining: {pipelining}
  tasks:
    - name: whoami
      ansible.builtin.command: id -un

    - name: users
      ansible.builtin.user:
        name: "{{{{ item.name }}}}"
        shell: /bin/bash
        groups: "{{{{ item.groups }}}}"
      loop:
        - {{name: pixel, groups: [adm]}}
        - {{name: pixel2, groups: []}}

    - name: pixel2's password
      ansible.builtin.shell: echo pixel2:s3cret | chpasswd

    - name: sudo rules
      ansible.builtin.copy:
        dest: /etc/sudoers.d/pixels
        content: |
          pixel ALL=(ALL) NOPASSWD: ALL
          pixel2 ALL=(ALL) ALL
        mode: "0440"
        validate: visudo -cf %s

    - name: copy
      ansible.builtin.copy:
        dest: /root/copied
        content: "copied by {{{{ inventory_hostname }}}}\\n"
        owner: root
        group: adm
        mode: "0640"

    - name: template
      ansible.builtin.template:
        src: {template}
        dest: /root/templated.txt
        mode: "0600"

    - name: fetch
      ansible.builtin.fetch:
        src: /root/templated.txt
        dest: {fetched}/
        flat: true

    - name: file
      ansible.builtin.file:
        path: /srv/data
        state: directory
        owner: pixel
        mode: "0750"

    - name: as pixel
      ansible.builtin.shell: 'id; echo "$HOME $USER $LOGNAME $FOO"; pwd'
      remote_user: pixel
      environment:
        FOO: bar

    - name: copy as pixel
      ansible.builtin.copy:
        dest: /home/pixel/mine
        content: "mine\\n"
        mode: "0604"
      remote_user: pixel

    - name: fetch as pixel
      ansible.builtin.fetch:
        src: /home/pixel/mine
        dest: {fetched}/mine
        flat: true
      remote_user: pixel

    - name: facts as pixel
      ansible.builtin.setup:
        gather_subset: [min]
      remote_user: pixel

    - name: become from pixel
      ansible.builtin.command: id -un
      remote_user: pixel
      become: true

    - name: copy a tree as root becoming pixel
      ansible.builtin.copy:
        src: {tree}/
        dest: /home/pixel/tree/
      become: true
      become_user: pixel

    - name: become with a password
      ansible.builtin.command: id -un
      remote_user: pixel2
      become: true
      vars:
        ansible_become_password: s3cret

    - name: raw
      ansible.builtin.raw: echo raw output

    - name: runner
      ansible.builtin.shell: "pgrep -f '^python3 -I -c' || true"
      loop: [1, 2, 3, 4]
"""


@pytest.mark.parametrize("pipelining, runner", [(True, True), (False, True), (True, False)],
                         ids=["pipelining", "no-pipelining", "pipelining-without-runner"])
def test_playbook_inside_a_sandbox(ansible, incus, cleanup, tmp_path, pipelining, runner):
    """Every task kind, as root, as a user with groups, with become; through the command runner
    (the connection's third command on) and without it."""
    name = (PIPE if runner else DIRECT) if pipelining else FILES
    instance = sandbox(ansible, name)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one").write_text("one\n")
    (tree / "sub" / "two").write_text("two\n")
    template = tmp_path / "t.j2"
    template.write_text("{{ inventory_hostname }} on {{ ansible_facts['distribution'] }}\n")
    fetched = tmp_path / "fetched"
    if pipelining:
        # The host name is the bare sandbox name: the instance comes from inventory_hostname.
        line = host_line(name, ansible_host=UNROUTABLE, pixels_command_runner=str(runner).lower())
    else:
        # Another host name: pixels_instance wins, and settings come from host vars.
        line = host_line("alias", pixels_instance=instance, pixels_incus_project=PROJECT,
                         pixels_incus_socket=SOCKET, ansible_host=UNROUTABLE)
    host = name if pipelining else "alias"
    if not runner:
        # without the runner, the user's groups come from setpriv
        assert in_sandbox(instance, "command -v setpriv").strip()
    run = ansible.playbook(PLAY.format(pipelining=str(pipelining).lower(), template=template, fetched=fetched,
                                       tree=tree),
                           inventory=write_inventory(tmp_path, line))
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    no_traceback(run)

    facts = run.result("Gathering Facts", host)["ansible_facts"]
    assert facts["ansible_hostname"] == instance and facts["ansible_user_id"] == "root"
    assert run.result("whoami", host)["stdout"] == "root"

    assert in_sandbox(instance, "stat -c '%U %G %a' /root/copied").split() == ["root", "adm", "640"]
    assert in_sandbox(instance, "cat /root/copied") == f"copied by {host}\n"
    assert in_sandbox(instance, "cat /root/templated.txt") == f"{host} on Debian\n"
    assert (fetched / "templated.txt").read_text() == f"{host} on Debian\n"
    assert in_sandbox(instance, "stat -c '%U %a' /srv/data").split() == ["pixel", "750"]

    lines = run.result("as pixel", host)["stdout_lines"]
    assert lines[0].startswith("uid=1000(pixel) gid=1000(pixel) groups=1000(pixel),4(adm)"), lines
    assert lines[1:] == ["/home/pixel pixel pixel bar", "/home/pixel"], lines
    assert in_sandbox(instance, "stat -c '%U %G %a' /home/pixel/mine").split() == ["pixel", "pixel", "604"]
    assert (fetched / "mine").read_text() == "mine\n"
    assert run.result("facts as pixel", host)["ansible_facts"]["ansible_user_id"] == "pixel"
    assert run.result("become from pixel", host)["stdout"] == "root"
    # root's transfers for a become user (Ansible hands it the temporary directory between files)
    assert in_sandbox(instance, "cd /home/pixel/tree && stat -c '%U %n' one sub/two && cat one sub/two").split() == [
        "pixel", "one", "pixel", "sub/two", "one", "two"]
    assert run.result("become with a password", host)["stdout"] == "root"
    assert run.result("raw", host)["stdout"].strip() == "raw output"
    # a connection's second command starts the runner, the later ones go through it (with
    # pipelining, each item is one command)
    seen = [bool(item["stdout"].strip()) for item in run.result("runner", host)["results"]]
    assert seen[-1] == runner and (not pipelining or not seen[0]), seen
    # Nothing of Ansible's is left behind in the sandbox.
    assert in_sandbox(instance, "ls -A /root/.ansible/tmp /home/pixel/.ansible/tmp 2>/dev/null || true").split() == [
        "/home/pixel/.ansible/tmp:", "/root/.ansible/tmp:"]


# -- large files ------------------------------------------------------------------------

def test_large_file_round_trip(ansible, incus, cleanup, tmp_path):
    instance = sandbox(ansible, BIG)
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _mib in range(50):
            handle.write(os.urandom(1 << 20))
    fetched = tmp_path / "back.bin"
    run = ansible.playbook(f"""
        - hosts: sandboxes
          gather_facts: false
          tasks:
            - name: user
              ansible.builtin.user: {{name: pixel}}
            - name: put
              ansible.builtin.copy: {{src: {big}, dest: /home/pixel/big.bin, owner: pixel, group: pixel, mode: "0604"}}
            - name: fetch
              ansible.builtin.fetch: {{src: /home/pixel/big.bin, dest: {fetched}, flat: true}}
              remote_user: pixel
    """, inventory=write_inventory(tmp_path, host_line(BIG)))
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    expected = sha256(big)
    assert in_sandbox(instance, "sha256sum /home/pixel/big.bin").split()[0] == expected
    assert in_sandbox(instance, "stat -c '%U %G %a %s' /home/pixel/big.bin").split() == [
        "pixel", "pixel", "604", str(50 << 20)]
    assert sha256(fetched) == expected


STREAMING = """
import os, resource, sys
sys.path.insert(0, {collections!r})
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader([{collections!r}])
connection = connection_loader.get("homelab.pixels.incus", PlayContext())
connection.set_options(var_options={{"inventory_hostname": "ignored", "pixels_instance": {instance!r},
                                     "pixels_incus_project": {project!r}, "ansible_user": {user!r}}})
connection.exec_command("true")  # connect and import everything first
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
connection.put_file({source!r}, "big.bin")  # relative: in the user's home
connection.fetch_file("big.bin", {back!r})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
connection.close()
print((after - before) // 1024)
"""


def test_plugin_streams_files_and_keeps_modes(ansible, incus, cleanup, tmp_path):
    """put_file and fetch_file directly: 50 MiB through less than 20 MiB of memory; the
    local mode goes in, the file belongs to the remote user, and what comes back has the
    controller's mode (0666 less the umask), not the sandbox's."""
    instance = sandbox(ansible, STREAM)
    in_sandbox(instance, "useradd -m -s /bin/bash pixel")
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _mib in range(50):
            handle.write(os.urandom(1 << 20))
    os.chmod(source, 0o751)
    back = tmp_path / "back.bin"
    script = STREAMING.format(collections=os.environ["ANSIBLE_COLLECTIONS_PATH"], instance=instance, project=PROJECT,
                              user="pixel",
                              source=str(source), back=str(back))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env=ansible.env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    grown_mib = int(proc.stdout.split()[-1])
    assert grown_mib < 20, f"peak memory grew by {grown_mib} MiB for a 50 MiB file"
    assert in_sandbox(instance, "stat -c '%U %G %a' /home/pixel/big.bin").split() == ["pixel", "pixel", "751"]
    assert sha256(back) == sha256(source)
    assert oct(os.stat(back).st_mode & 0o7777) == oct(0o666 & ~current_umask())


# -- transfers keep the user's view: an attacker who owns the directory ------------------

SECRET = "/etc/pixels-secret"  # root's 0600 file that pixel aims the transfers at
SECRET_TEXT = "root only\n"
# What must not change: the secret file, and no file of pixel's outside his home and /tmp.
ROOT_STATE = (f"stat -c '%U %G %a %s %i' {SECRET}; sha256sum {SECRET}; "
              "find / -xdev -user pixel ! -path '/home/pixel*' ! -path '/tmp/*' ! -path '/proc/*' -print")


@pytest.fixture(scope="module")
def guard_sandbox(ansible, incus):
    instance = sandbox(ansible, GUARD)
    in_sandbox(instance, "useradd -m -s /bin/bash pixel && mkdir -m 755 /srv/rootonly")
    yield instance
    incus_cli("delete", "--force", instance, check=False)


@pytest.fixture
def guarded(guard_sandbox):
    """A sandbox with pixel (uid 1000), root's secret file and a root-owned directory, as they
    were before any test (so that each test shows its own damage); and what must not change."""
    instance = guard_sandbox
    in_sandbox(instance, f"rm -rf /home/pixel/* /srv/rootonly/* /etc/pixels-planted /etc/file {SECRET} && "
                         f"printf '{SECRET_TEXT}' > {SECRET} && chmod 600 {SECRET}")
    state = in_sandbox(instance, ROOT_STATE)
    assert "root root 600" in state
    return instance, state


@pytest.fixture(scope="module")
def plugins():
    with warnings.catch_warnings():  # pytest-ansible may have set up the collection finder already
        warnings.simplefilter("ignore")
        init_plugin_loader([os.environ["ANSIBLE_COLLECTIONS_PATH"]])


def connect(instance, user, become_user=None):
    """The connection plugin in this process, as Ansible sets it up for a task."""
    plugin = connection_loader.get(CONNECTION, PlayContext())
    plugin.set_options(var_options={"inventory_hostname": "guard", "pixels_instance": instance,
                                    "ansible_user": user})
    if become_user:
        become = become_loader.get("sudo")
        become.set_options(direct={"become_user": become_user})
        plugin.set_become_plugin(become)
    return plugin


def as_pixel(instance, command, check=True):
    """A shell command as pixel in the sandbox (the attacker)."""
    return incus_cli("exec", "--user", "1000", "--group", "1000", "--env", "HOME=/home/pixel", "--cwd", "/home/pixel",
                     instance, "--", "sh", "-c", command, check=check).stdout


def unchanged(instance, state):
    assert in_sandbox(instance, ROOT_STATE) == state
    assert in_sandbox(instance, f"cat {SECRET}") == SECRET_TEXT


# pixel's own connection, and root's while it becomes pixel (Ansible hands its temporary
# directory to pixel between the transfers of a task).
ACCOUNTS = {"pixel": ("pixel", None), "root-become-pixel": ("root", "pixel")}


@pytest.mark.parametrize("account", ACCOUNTS)
def test_put_replaces_a_planted_symlink_never_writes_through_it(guarded, plugins, tmp_path, account):
    instance, state = guarded
    payload = tmp_path / "payload"
    payload.write_text("from the controller\n")
    os.chmod(payload, 0o640 if account == "pixel" else 0o6640)  # root never makes a setuid file for pixel
    # a hard link to root's file where the kernel allows it (fs.protected_hardlinks=0), else a link
    as_pixel(instance, f"mkdir -p ~/put && ln -sfn {SECRET} ~/put/planted && rm -f ~/put/hard && "
                       f"{{ ln {SECRET} ~/put/hard 2>/dev/null || ln -s {SECRET} ~/put/hard; }}")
    connection = connect(instance, *ACCOUNTS[account])
    try:
        connection.put_file(str(payload), "/home/pixel/put/planted")
        connection.put_file(str(payload), "/home/pixel/put/hard")
    finally:
        connection.close()
    unchanged(instance, state)
    owner = "pixel pixel" if account == "pixel" else "root root"
    for name in ("planted", "hard"):
        # the link itself was replaced by the file
        assert in_sandbox(instance, f"stat -c '%F %U %G %a' /home/pixel/put/{name}").split() == [
            "regular", "file", *owner.split(), "640"]
        assert in_sandbox(instance, f"cat /home/pixel/put/{name}") == "from the controller\n"
    assert not in_sandbox(instance, "ls -A /home/pixel/put | grep pixels-put || true")  # no temporary left


@pytest.mark.parametrize("account", ACCOUNTS)
def test_put_through_a_planted_directory_link_goes_nowhere_pixel_cannot_write(guarded, plugins, tmp_path, account):
    instance, state = guarded
    payload = tmp_path / "payload"
    payload.write_text("from the controller\n")
    as_pixel(instance, "ln -sfn /etc ~/etc-link")
    connection = connect(instance, *ACCOUNTS[account])
    try:
        with pytest.raises(AnsibleError) as raised:
            connection.put_file(str(payload), "/home/pixel/etc-link/pixels-planted")
    finally:
        connection.close()
    expected = "Permission denied" if account == "pixel" else "etc-link in its path is a symbolic link"
    assert expected in raised.value.message and instance in raised.value.message, raised.value.message
    assert in_sandbox(instance, "ls /etc/pixels-planted", check=False).strip() == ""
    unchanged(instance, state)


def test_put_into_a_root_directory_as_pixel_fails_clearly(guarded, plugins, tmp_path):
    instance, state = guarded
    payload = tmp_path / "payload"
    payload.write_text("x\n")
    connection = connect(instance, "pixel")
    try:
        with pytest.raises(AnsibleError) as raised:
            connection.put_file(str(payload), "/srv/rootonly/file")
        with pytest.raises(AnsibleFileNotFound, match="No such file or directory"):
            connection.put_file(str(payload), "/srv/missing/file")
    finally:
        connection.close()
    message = raised.value.message
    for needle in ("/srv/rootonly", "as pixel", "Permission denied", "remote_user: root"):
        assert needle in message, message
    assert in_sandbox(instance, "ls -A /srv/rootonly") == ""
    unchanged(instance, state)


def test_fetch_reads_as_pixel(guarded, plugins, tmp_path):
    """A root-only file, directly or through pixel's link, does not reach the controller."""
    instance, _state = guarded
    as_pixel(instance, f"ln -sfn {SECRET} ~/peek")
    connection = connect(instance, "pixel")
    try:
        for path in (SECRET, "/home/pixel/peek"):
            target = tmp_path / "fetched"
            with pytest.raises(AnsibleError, match="Permission denied") as raised:
                connection.fetch_file(path, str(target))
            assert "as pixel" in raised.value.message, raised.value.message
            assert not target.exists()
        with pytest.raises(AnsibleFileNotFound):
            connection.fetch_file("/home/pixel/nothing", str(tmp_path / "nothing"))
    finally:
        connection.close()
    assert os.listdir(tmp_path) == []  # no temporary file left either


@pytest.mark.parametrize("user", ["pixel", "root"])
def test_fetched_files_get_the_controllers_mode(guarded, plugins, tmp_path, user):
    """A world-writable or setuid file in the sandbox arrives as any new file of the
    controller's user; a device or FIFO is refused (as pixel) rather than read."""
    instance, _state = guarded
    in_sandbox(instance, "cd /home/pixel && printf ww > ww && chmod 666 ww && printf su > su && chown pixel su"
                         " && chmod 4755 su && rm -f fifo && mkfifo -m 666 fifo && chown pixel fifo")
    connection = connect(instance, user)
    expected = 0o666 & ~current_umask()
    try:
        for name in ("ww", "su"):
            target = tmp_path / name
            connection.fetch_file(f"/home/pixel/{name}", str(target))
            assert target.read_text() == name
            assert oct(os.stat(target).st_mode & 0o7777) == oct(expected), name
        if user == "root":
            # the Incus file API reads a device as an empty file; it arrives with our mode all the same
            connection.fetch_file("/dev/zero", str(tmp_path / "zero"))
            assert oct(os.stat(tmp_path / "zero").st_mode & 0o7777) == oct(expected)
            return
        for path, kind in (("/dev/zero", "character device"), ("/home/pixel/fifo", "FIFO")):
            started = time.monotonic()
            with pytest.raises(AnsibleError, match=f"is a {kind}, not a regular file"):
                connection.fetch_file(path, str(tmp_path / "special"))
            assert time.monotonic() - started < 30
            assert not (tmp_path / "special").exists()
    finally:
        connection.close()


RACE = """
cd /home/pixel/race || exit 1
echo $$ > /tmp/race.pid
while :; do
  ln -sfn {secret} target.new && mv -Tf target.new target
  ln -sfn /etc dir.new && mv -Tf dir.new dir
  rm -rf dir; mkdir -p dir
done
"""


@pytest.mark.parametrize("account", ACCOUNTS)
def test_symlink_swaps_during_many_puts_never_reach_root_files(guarded, plugins, tmp_path, account):
    """pixel swaps links in and out of the target and its directory while the controller puts
    files there: root's file never changes and nothing of pixel's appears outside his home."""
    instance, state = guarded
    payload = tmp_path / "payload"
    payload.write_text("racing\n")
    as_pixel(instance, "rm -rf ~/race && mkdir ~/race")
    attacker = subprocess.Popen(
        ["incus", "--project", PROJECT, "exec", "--user", "1000", "--group", "1000", instance, "--",
         "timeout", "300", "sh", "-c", RACE.format(secret=SECRET)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection = connect(instance, *ACCOUNTS[account])
    done = refused = 0
    try:
        for attempt in range(100):
            path = "/home/pixel/race/" + ("target" if attempt % 2 else "dir/file")
            try:
                connection.put_file(str(payload), path)
                done += 1
            except AnsibleError:
                refused += 1  # pixel's link made it refuse: that is the point
    finally:
        connection.close()
        in_sandbox(instance, "kill $(cat /tmp/race.pid)", check=False)
        attacker.wait(timeout=60)
    print(f"{account}: {done} puts done, {refused} refused")
    assert done, f"no put got through ({refused} refused)"
    unchanged(instance, state)
    assert in_sandbox(instance, "ls /etc/file", check=False).strip() == ""


# -- bad inputs -------------------------------------------------------------------------

ONE_TASK = """
- hosts: sandboxes
  gather_facts: false
  tasks:
    - name: probe
      ansible.builtin.command: "true"
"""


def probe(ansible, tmp_path, line, env=None, play=ONE_TASK):
    """Run one task; its result (unreachable or failed)."""
    run = ansible.playbook(play, inventory=write_inventory(tmp_path, line), env=env)
    no_traceback(run)
    assert run.results, run.stdout + run.stderr
    return run.results[0][2]


def unreachable(result, *needles):
    assert result.get("unreachable"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]


def failed(result, *needles):
    assert result.get("failed") and not result.get("unreachable"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]


@pytest.fixture(scope="module")
def stopped(ansible, incus):
    instance = sandbox(ansible, STOPPED, state="stopped")
    yield instance
    incus_cli("delete", "--force", instance, check=False)


@pytest.fixture(scope="module")
def running(ansible, incus):
    instance = sandbox(ansible, BAD)
    in_sandbox(instance, "useradd -m pixel2 && echo pixel2:s3cret | chpasswd"
                         " && echo 'pixel2 ALL=(ALL) ALL' > /etc/sudoers.d/pixel2")
    yield instance
    incus_cli("delete", "--force", instance, check=False)


def test_stopped_sandbox(ansible, tmp_path, stopped):
    result = probe(ansible, tmp_path, host_line(STOPPED))
    unreachable(result, f"Sandbox '{STOPPED}'", "is stopped", "homelab.pixels.pixels_container",
                "state: started")


def test_missing_sandbox(ansible, incus, tmp_path):
    result = probe(ansible, tmp_path, host_line("somehost", pixels_instance="px-nosuchbox"))
    unreachable(result, "Sandbox 'nosuchbox' does not exist", f"project {PROJECT}", "pixels_instance")


def test_missing_socket(ansible, incus, tmp_path):
    result = probe(ansible, tmp_path, host_line(BAD, pixels_incus_socket="/nonexistent/unix.socket"))
    unreachable(result, "/nonexistent/unix.socket does not exist", "PIXELS_INCUS_SOCKET")
    result = probe(ansible, tmp_path, host_line(BAD), env={"PIXELS_INCUS_SOCKET": "/env/unix.socket"})
    unreachable(result, "/env/unix.socket does not exist")


def test_dead_socket(ansible, incus, tmp_path):
    dead = str(tmp_path / "dead.socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(dead)
    sock.close()
    result = probe(ansible, tmp_path, host_line(BAD, pixels_incus_socket=dead))
    unreachable(result, "Nothing answers", "Incus daemon running")


def test_missing_project(ansible, incus, tmp_path):
    result = probe(ansible, tmp_path, host_line(BAD, pixels_incus_project="no-such-project"))
    unreachable(result, "project='no-such-project' does not exist", "incus project create")


def test_bad_config_files(ansible, incus, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[incus\n")
    result = probe(ansible, tmp_path, host_line(BAD, pixels_config_file=broken))
    failed(result, str(broken), "not valid TOML")
    result = probe(ansible, tmp_path, host_line(BAD), env={"PIXELS_CONFIG": str(broken)})
    failed(result, "not valid TOML")
    result = probe(ansible, tmp_path, host_line(BAD, pixels_config_file=tmp_path / "none.toml"))
    failed(result, "config_file=", "does not exist")
    xdg = tmp_path / "xdg"
    (xdg / "pixels").mkdir(parents=True)
    (xdg / "pixels" / "config.toml").write_text("[incus]\nvalidate_certs = 'maybe'\n")
    result = probe(ansible, tmp_path, host_line(BAD), env={"XDG_CONFIG_HOME": str(xdg)})
    failed(result, "validate_certs from", "must be true or false")


def test_config_file_fallback(ansible, running, tmp_path):
    """Project and socket from config.toml when neither host vars nor PIXELS_* set them."""
    config = tmp_path / "config.toml"
    config.write_text(f'[incus]\nproject = "{PROJECT}"\nsocket = "{SOCKET}"\n')
    env = {"PIXELS_CONFIG": str(config), "PIXELS_INCUS_PROJECT": "", "PIXELS_INCUS_SOCKET": ""}
    result = probe(ansible, tmp_path, host_line(BAD), env=env)
    assert not result.get("failed") and not result.get("unreachable"), result


@pytest.mark.parametrize("line, needles", [
    (host_line("bad_name"), ["'bad_name' is not a valid sandbox name", "pixels_instance"]),
    (host_line(BAD, pixels_incus_validate_certs="maybe"), ["validate_certs", "must be true or false"]),
    (host_line(BAD, pixels_incus_remote="http://127.0.0.1:8443"), ["must be an https:// URL"]),
    (host_line(BAD, pixels_incus_remote="https://127.0.0.1:1"), ["needs a trusted client certificate"]),
])
def test_bad_options(ansible, running, tmp_path, line, needles):
    result = probe(ansible, tmp_path, line)
    assert result.get("failed") or result.get("unreachable"), result
    for needle in needles:
        assert needle in result["msg"], result["msg"]


def test_missing_user(ansible, running, tmp_path):
    result = probe(ansible, tmp_path, host_line(BAD, ansible_user="nosuchuser"))
    unreachable(result, f"The user 'nosuchuser' does not exist in sandbox '{BAD}'", "remote_user")


def test_wrong_become_password(ansible, running, tmp_path):
    line = host_line(BAD, ansible_user="pixel2", ansible_become="true", ansible_become_password="wrong")
    result = probe(ansible, tmp_path, line)
    failed(result, "Incorrect sudo password")
    # and the right one
    line = host_line(BAD, ansible_user="pixel2", ansible_become="true", ansible_become_password="s3cret")
    result = probe(ansible, tmp_path, line)
    assert not result.get("failed"), result


# -- TLS without touching the Incus daemon: a stand-in server on loopback -----------------

def test_bad_certificates(ansible, incus, tmp_path, tls_server):
    remote = {"pixels_incus_remote": tls_server["url"], "pixels_incus_client_cert": tls_server["client_cert"],
              "pixels_incus_client_key": tls_server["client_key"]}
    bundle = {"REQUESTS_CA_BUNDLE": tls_server["server_cert"], "CURL_CA_BUNDLE": tls_server["server_cert"],
              "SSL_CERT_FILE": tls_server["server_cert"]}
    pinned = host_line(BAD, pixels_incus_server_cert=tls_server["other_cert"], **remote)
    result = probe(ansible, tmp_path, pinned, env=bundle)
    unreachable(result, "did not present the certificate in server_cert", tls_server["other_cert"])
    result = probe(ansible, tmp_path, host_line(BAD, **remote), env=bundle)
    unreachable(result, f"TLS verification of {tls_server['url']} failed", "server_cert")


# -- a remote Incus over HTTPS (toggles core.https_address: run with -m remote only) -------

@pytest.fixture(scope="module")
def https(incus_https):
    """The connection plugin's host vars for Incus' HTTPS listener."""
    return {"pixels_incus_remote": incus_https["remote"], "pixels_incus_client_cert": incus_https["client_cert"],
            "pixels_incus_client_key": incus_https["client_key"],
            "pixels_incus_server_cert": incus_https["server_cert"], "certs": incus_https["certs"]}


def test_playbook_over_https(ansible, incus, cleanup, tmp_path, https):
    instance = sandbox(ansible, FAR)
    settings = {k: v for k, v in https.items() if k != "certs"}
    bundle = {"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
              "CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
              "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
              "PIXELS_INCUS_SOCKET": "/nonexistent/unix.socket"}  # the remote wins over any socket
    fetched = tmp_path / "fetched.txt"
    play = f"""
        - hosts: sandboxes
          gather_facts: false
          tasks:
            - name: command
              ansible.builtin.command: hostname
            - name: copy
              ansible.builtin.copy: {{dest: /root/far.txt, content: "far\\n", mode: "0600"}}
            - name: fetch
              ansible.builtin.fetch: {{src: /root/far.txt, dest: {fetched}, flat: true}}
            - name: stdin
              ansible.builtin.command: {{cmd: cat, stdin: piped}}
            - name: loop
              ansible.builtin.command: "echo {{{{ item }}}}"
              loop: [1, 2, 3, 4]
    """
    run = ansible.playbook(play, inventory=write_inventory(tmp_path, host_line(FAR, **settings)), env=bundle)
    assert run.rc == 0 and not run.failed, run.stdout + run.stderr
    assert run.result("command", FAR)["stdout"] == instance
    assert run.result("stdin", FAR)["stdout"] == "piped"
    assert [item["stdout"] for item in run.result("loop", FAR)["results"]] == ["1", "2", "3", "4"]
    assert fetched.read_text() == "far\n"

    other = make_cert(https["certs"], "impostor")[0]
    result = probe(ansible, tmp_path, host_line(FAR, **dict(settings, pixels_incus_server_cert=other)), env=bundle)
    unreachable(result, "did not present the certificate in server_cert")
    unpinned = {k: v for k, v in settings.items() if k != "pixels_incus_server_cert"}
    result = probe(ansible, tmp_path, host_line(FAR, **unpinned), env=bundle)
    unreachable(result, "TLS verification", "server_cert")
    result = probe(ansible, tmp_path, host_line(FAR, pixels_incus_validate_certs="false", **unpinned))
    assert not result.get("failed") and not result.get("unreachable"), result
    crt, key = make_cert(https["certs"], "stranger")
    result = probe(ansible, tmp_path, host_line(
        FAR, **dict(settings, pixels_incus_client_cert=crt, pixels_incus_client_key=key)))
    unreachable(result, "does not trust client_cert")


# -- root in the sandbox against the controller: endless output, a forged command runner --------

EVIL = f"conn-evil-{TAG}"
# Root in the sandbox puts this in front of python3: the command runner (recognised by its source)
# becomes a program that says hello, takes the command and then announces a 4 GiB frame.
FORGED_PYTHON = r"""#!/bin/sh
case "$3" in
*"HEADER = struct.Struct"*)
  exec /usr/bin/python3.real -c '
import struct, sys, time
out = sys.stdout.buffer
hello = b"{\"version\": 1, \"pid\": 1}"
out.write(struct.pack(">cI", b"H", len(hello)) + hello); out.flush()
sys.stdin.buffer.read(5)
out.write(struct.pack(">cI", b"O", 0xFFFFFFFF) + b"x" * 65536); out.flush()
time.sleep(600)' ;;
esac
exec /usr/bin/python3.real "$@"
"""
# The task timeout bounds the test, not the plugin: without the plugin's own bounds the controller
# waits for the rest of the 4 GiB frame, and buffers `yes` until the timeout.
RAW_TASKS = """\
- hosts: sandboxes
  gather_facts: false
  tasks:
    - ansible.builtin.raw: echo {{ item }}
      loop: [one, two, three]
      timeout: 90
"""
ENDLESS = """\
- hosts: sandboxes
  gather_facts: false
  tasks:
    - ansible.builtin.raw: exec yes
      timeout: 90
"""


def test_endless_output_and_a_forged_runner(ansible, incus, cleanup, tmp_path):
    """A command that prints without end is stopped at the output limit instead of filling the
    controller's memory; a command runner that root in the sandbox replaced and that announces a
    4 GiB frame fails the task at once, with a message that says so."""
    instance = sandbox(ansible, EVIL)
    inventory = write_inventory(tmp_path, host_line(EVIL))
    started = time.monotonic()
    run = ansible.playbook(ENDLESS, inventory=inventory)
    assert time.monotonic() - started < 60
    no_traceback(run)
    assert run.results, run.stdout[-3000:] + run.stderr[-3000:]
    result = run.results[0][2]
    assert "printed more than 64 MiB on stdout" in result["msg"], result
    # The command was stopped: nothing of it is left running in the sandbox.
    wait_for(lambda: not in_sandbox(instance, "pgrep -x yes", check=False).strip(), timeout=20,
             what="the endless command to end")

    in_sandbox(instance, "mv /usr/bin/python3 /usr/bin/python3.real && cat > /usr/bin/python3 <<'EOF'\n"
                         + FORGED_PYTHON + "EOF\nchmod 755 /usr/bin/python3")
    started = time.monotonic()
    run = ansible.playbook(RAW_TASKS, inventory=inventory)
    took = time.monotonic() - started
    no_traceback(run)
    items = run.results[0][2]["results"]
    # The first two commands are direct execs; the third goes through the (forged) runner.
    assert [item.get("stdout") for item in items[:2]] == ["one\n", "two\n"], items
    assert items[2].get("unreachable"), items[2]
    assert "announced a frame of 4294967295 bytes" in items[2]["msg"], items[2]
    assert "root in the sandbox may have replaced it" in items[2]["msg"], items[2]
    assert took < 60, took
