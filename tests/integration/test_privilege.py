"""pixel never gains root through the roles (issue 12): the attacks an agent with a shell as pixel
can prepare before the operator runs site.yml again, on the real Incus.

One sandbox is set up as users run it: egress policy `agent` (pixel's sudo is only safe-apt),
provisioning, sessions, console and the dev tools (npm route). A checkpoint of it is restored before
each attack. As pixel, each attack plants links, FIFOs and hard links where the roles write (pixel's
home, and the fixed path in /tmp the mise step used), then site.yml runs again with every role on.
Afterwards, whether the run succeeded or failed (then with a message naming the path): nothing
outside pixel's home and the temp directories is pixel's, no file of the system changed owner or
mode, no setuid file appeared, and pixel runs nothing as uid 0.

The host's fs.protected_* sysctls (incus_host sets them; containers share the kernel's) refuse
hard links to root's files and root's opening of pixel's FIFO in /tmp. The roles must hold
without those guards: the FIFO and hard-link attack turns them off for its run (they are global,
so under the tests' host-wide lock) and puts them back; where /proc/sys cannot be written (a host
that is itself a container) it runs with them on and the /tmp check looks at what the kernel does
not guard (the planted FIFO stays as it was).
"""

import subprocess
import time

import pytest

import isolated
from conftest import IMAGE, in_sandbox, incus_cli
from site_helpers import failure, ok, site
from test_provision import HOST_BUNDLE

NAME = "pr-attack"
INSTANCE = "px-" + NAME
CLEAN = "clean"
# Where pixel may own files: its home, the temp directories, its runtime directory, its mail spool.
PIXEL_MAY_OWN = ("/home/pixel", "/tmp", "/var/tmp", "/run/user/1000", "/var/mail/pixel", "/var/spool/mail/pixel")
# The system files whose owner and mode must stay as they were.
WATCHED = "/etc /root /usr/local /var/lib/pixels /usr/bin /usr/sbin /usr/lib"
# What root runs when it reads pixel's FIFO at the mise step's old fixed path.
PAYLOAD = "touch /etc/pixels-pwned; chown 1000:1000 /etc/pixels-pwned /etc/hostname"


def as_pixel(command, check=True):
    """A shell command as pixel (uid 1000, its own group), in its home."""
    return incus_cli("exec", INSTANCE, "--user", "1000", "--group", "1000", "--cwd", "/home/pixel",
                     "--env", "HOME=/home/pixel", "--", "sh", "-c", command, check=check)


def site_data(key, devtools):
    box = {"name": NAME, "image": IMAGE,
           "provision": {"ssh_keys": [key], "ca_certificates": [HOST_BUNDLE]},
           "egress": {"mode": "agent"},
           "devtools": devtools}
    return {"pixels_sandboxes": [box]}


NPM = {"installer": "npm", "tools": {"node": "lts"}}
# mise.run is unreachable here: a local file stands in for the installer script, so that the
# step downloads it and runs sh on it, as it would on a homelab.
MISE = {"installer": "mise", "tools": {"node": "lts"}}
MISE_URL = "file:///etc/os-release"


def system_view():
    """Owner, group and mode of every watched path; setuid/setgid files; pixel's files elsewhere."""
    modes = {}
    for line in in_sandbox(INSTANCE, f"find {WATCHED} -xdev -printf '%p\\t%u:%g\\t%m\\n' 2>/dev/null",
                           check=False).splitlines():
        path, owner, mode = line.split("\t")
        modes[path] = (owner, mode)
    setid = set(in_sandbox(INSTANCE, "find / -xdev \\( -perm -4000 -o -perm -2000 \\) -type f 2>/dev/null",
                           check=False).split())
    return modes, setid


def pixels_files_outside():
    prune = " -o ".join(f"-path {path}" for path in PIXEL_MAY_OWN)
    found = in_sandbox(INSTANCE, f"find / /run /dev/shm -xdev \\( {prune} \\) -prune -o -user pixel -print 2>/dev/null",
                       check=False)
    return sorted(set(found.split()))


def pixels_root_processes():
    """Processes whose real uid is pixel's but that hold uid 0 (a setuid shell, say)."""
    out = in_sandbox(INSTANCE, "ps -e -o ruid=,euid=,suid=,pid=,args=")
    return [line for line in out.splitlines()
            if line.split()[0] == "1000" and "0" in line.split()[1:3]]


def assert_nothing_gained(before):
    modes_before, setid_before = before
    modes, setid = system_view()
    assert pixels_files_outside() == []
    changed = {path: (modes_before[path], modes[path]) for path in modes_before
               if path in modes and modes[path] != modes_before[path]}
    assert changed == {}
    new_owned = {path: value for path, value in modes.items()
                 if path not in modes_before and value[0].split(":")[0] != "root"}
    assert new_owned == {}
    assert setid - setid_before == set()
    assert pixels_root_processes() == []
    assert in_sandbox(INSTANCE, "test -e /etc/pixels-pwned && echo pwned", check=False).strip() == ""


def wait_installer(timeout=600):
    """Until the dev tools installer has finished (done or failed); its unit's result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = in_sandbox(INSTANCE, "systemctl show -p ActiveState --value pixels-devtools").strip()
        if state in ("inactive", "failed"):
            return state
        time.sleep(2)
    raise AssertionError(f"the dev tools installer still runs after {timeout} s")


@pytest.fixture(scope="module")
def attack(ansible, incus, tmp_path_factory):
    """The sandbox set up by site.yml with every role on, checkpointed; a function that restores
    the checkpoint before an attack."""
    workdir = tmp_path_factory.mktemp("privilege")
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (workdir / "id_ed25519.pub").read_text().strip()
    extra = {"pixels_console_dir": str(workdir / "pixels"), "pixels_console_ssh_config": str(workdir / "config"),
             "pixels_console_identity_file": str(key)}
    start = time.perf_counter()
    ok(site(ansible, workdir, site_data(public, NPM), extra=extra))
    assert wait_installer() == "inactive", in_sandbox(INSTANCE, "tail -n 20 /var/lib/pixels/devtools/*.log")
    assert "pixel" in as_pixel("id -un").stdout
    assert as_pixel("sudo -n true", check=False).returncode != 0  # restricted: only safe-apt
    incus_cli("snapshot", "create", INSTANCE, CLEAN)
    print(f"set-up: {time.perf_counter() - start:.0f} s")

    def restore():
        incus_cli("snapshot", "restore", INSTANCE, CLEAN)
        in_sandbox(INSTANCE, "for i in $(seq 60); do systemctl is-system-running --wait >/dev/null 2>&1; "
                             "case $(systemctl is-system-running) in running|degraded) exit 0;; esac; sleep 1; done")
        return system_view()

    yield {"ansible": ansible, "workdir": workdir, "key": public, "extra": extra, "restore": restore}
    incus_cli("delete", "--force", INSTANCE, check=False)


def rerun(attack, devtools, key=None):
    data = site_data(key or attack["key"], devtools)
    extra = dict(attack["extra"], pixels_devtools_mise_url=MISE_URL)
    return site(attack["ansible"], attack["workdir"], data, extra=extra)


def test_links_to_system_directories(attack):
    """~/.ssh -> /etc/pam.d and ~/.config -> /etc: the run stops at the link, naming it; nothing
    of /etc becomes pixel's (it did: /etc/pam.d pixel:pixel 0700, then /etc/pam.d/su rewritten)."""
    before = attack["restore"]()
    as_pixel("rm -rf ~/.ssh ~/.config && ln -s /etc/pam.d ~/.ssh && ln -s /etc ~/.config")
    run = rerun(attack, MISE)
    assert_nothing_gained(before)
    assert "/home/pixel/.ssh leads to a directory owned by root" in failure(run)


def test_link_to_etc_as_config(attack):
    """~/.config -> /etc, ~/.ssh as it was: provisioning passes, the dev tools stop at the link."""
    before = attack["restore"]()
    as_pixel("rm -rf ~/.config && ln -s /etc ~/.config")
    run = rerun(attack, MISE)
    assert_nothing_gained(before)
    assert "/home/pixel/.config leads to a directory owned by root" in failure(run)


def test_link_to_a_system_directory_as_the_config_file(attack):
    """~/.config/mise/config.toml -> /etc/sudoers.d: copying "into" it would put a file of pixel's
    into /etc/sudoers.d; the run stops at the link, naming it."""
    before = attack["restore"]()
    as_pixel("mkdir -p ~/.config/mise && rm -f ~/.config/mise/config.toml && ln -s /etc/sudoers.d ~/.config/mise/config.toml")
    run = rerun(attack, MISE)
    assert_nothing_gained(before)
    assert "/home/pixel/.config/mise/config.toml leads to a directory owned by root" in failure(run)


GUARDS = ("fs.protected_symlinks", "fs.protected_hardlinks", "fs.protected_regular", "fs.protected_fifos")


@pytest.fixture
def host_guards_off():
    """The kernel's link and FIFO guards off while the test runs, then as they were; True when
    they could be turned off."""
    paths = {key: "/proc/sys/" + key.replace(".", "/") for key in GUARDS}
    with isolated.host_wide("the kernel's link and FIFO guards"):
        before = {key: open(path).read().strip() for key, path in paths.items()}
        try:
            try:
                for path in paths.values():
                    with open(path, "w") as handle:
                        handle.write("0\n")
                off = True
            except OSError:  # read-only /proc/sys: a host that is itself a container
                off = False
            yield off
        finally:
            for key, path in paths.items():
                try:
                    with open(path, "w") as handle:
                        handle.write(before[key] + "\n")
                except OSError:
                    pass  # it could not be changed either


def test_fifos_links_and_hard_links_where_the_roles_write(attack, tmp_path, host_guards_off):
    """Files the roles write replaced by links to root's files, FIFOs and hard links (where the
    kernel allows them), and a FIFO with a payload at the mise step's old /tmp path; then a run
    with a new key (the full provisioning path) and the mise route, then the npm route: both
    succeed and nothing is gained."""
    before = attack["restore"]()
    as_pixel("mkdir -p ~/.config/mise && rm -f ~/.ssh/authorized_keys ~/.config/mise/config.toml"
             " && mkfifo ~/.ssh/authorized_keys"
             " && { ln /etc/issue ~/.config/mise/config.toml 2>/dev/null"
             "      || ln -s /etc/issue ~/.config/mise/config.toml; }"
             " && rm -f /tmp/pixels-mise-install.sh"
             " && mkfifo /tmp/pixels-mise-install.sh")
    # The old step wrote the download into the FIFO, then ran sh on it: pixel drains the first and
    # feeds the payload to the second.
    as_pixel(f"setsid sh -c 'while :; do cat /tmp/pixels-mise-install.sh >/dev/null;"
             f" echo \"{PAYLOAD}\" > /tmp/pixels-mise-install.sh; done' >/dev/null 2>&1 < /dev/null &")
    assert as_pixel("pgrep -u 1000 -f 'cat /tmp/pixels-mise-install.sh'", check=False).returncode == 0
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert other.returncode == 0
    new_key = (tmp_path / "k.pub").read_text().strip()

    run = rerun(attack, MISE, key=new_key)
    wait_installer()
    assert_nothing_gained(before)
    ok(run)
    # the step ran: it downloaded the stand-in and ran sh on it (then found no mise: failed)
    assert "downloading " + MISE_URL in in_sandbox(INSTANCE, "cat /var/lib/pixels/devtools/mise.log")
    # Root used no fixed path in /tmp: pixel's FIFO there is as it was (the old step wrote the
    # download into it and ran sh on it, then removed it; with the host's fs.protected_fifos=2 the
    # kernel refuses root's open, but not the removal).
    assert in_sandbox(INSTANCE, "stat -c %U:%F /tmp/pixels-mise-install.sh", check=False).strip() == "pixel:fifo"
    if host_guards_off:  # the hard link was made (and replaced, not written through)
        assert in_sandbox(INSTANCE, "stat -c %h /etc/issue").strip() == "1"
    assert in_sandbox(INSTANCE, "stat -c %U:%F /home/pixel/.ssh/authorized_keys").strip() == "pixel:regular file"
    assert new_key in in_sandbox(INSTANCE, "cat /home/pixel/.ssh/authorized_keys")

    ok(rerun(attack, NPM, key=new_key))
    assert wait_installer() == "inactive"
    assert_nothing_gained(before)
