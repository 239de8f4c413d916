"""A pristine Debian 12 and Debian 13 become pixels hosts by the README's own commands.

For each, a minbase root made with debootstrap (cached between runs on one machine under
~/.cache/pixels/fresh-hosts; a fresh CI machine builds it, ~50 s) with only what a freshly
installed Debian has that matters here: Debian's default deb822 sources (the release, -updates,
-security), python3, and systemd as init (real hosts boot systemd). No make, no python3-venv,
no sudo, no Incus, no backports source. It boots as a nested system container
(`security.nesting=true`, unprivileged) in a project and on a bridge of this test's own; the
checkout (the working tree's files, no .venv) is copied in, and the README's first command runs
inside: `./run site`, with a one-sandbox vars file. The test passes only when Incus inside
answers `incus info` and the sandbox `./run site` made runs a command.

In the unprivileged container no loop file can be mounted, so the incus_host role must choose a
dir pool itself and say why (checked). Debian 13 is set up as root. Debian 12 by a user: first
without sudo (`./run host` must stop naming sudo and the way out, having installed nothing), then
with sudo as a Debian installer gives it (package, group, password; passwordless for `./run site`,
whose apt step has no terminal to ask on), which the play uses to set up the host and to add the
user to Incus' admin group, then runs site.yml as the user; last, sudo that asks for a password:
a stop that names ANSIBLE_BECOME_ASK_PASS, then a pass with ANSIBLE_BECOME_PASSWORD_FILE.

Outside access: apt reaches Debian's mirror over plain HTTP through the bridge's NAT. pip reaches
PyPI over HTTPS; where the host reaches it only through a TLS-inspecting gateway (as on the
machines this project's CI runs on) the host's CA bundle is handed in as PIP_CERT, the variable a
user behind such a gateway sets. Nothing else of the host's pip configuration goes in.

Cost: the nested `make site` would build the debian/12 image again with debootstrap (~2 min); the
host's cached image tarball is copied into the nested host's image cache so that the image role
only imports it (its build path is proven by the outer `make host` on a fresh CI machine).
PIXELS_FRESH_HOST_BUILD_IMAGE=1 skips that seeding. The two distributions run side by side.
Measured on a 2-core machine shared with other test runs: 3.2 min with both roots cached, 3.7 min
with one root to build (70 s), 5.5 min with both cached under heavier load; building both roots
side by side took about 190 s (a fresh CI machine: about 6.5 min in all).

PIXELS_FRESH_HOST_FULL=1 (opt-in: it takes the suite's time again, per distribution) goes on to the
README's second command, `./run test`, in each nested host after the first: the whole suite on a
host that only the README's commands set up (a dir pool, as chosen above; the tests that need a
loop-mounted btrfs pool skip there, naming why). The host's CA bundle, when it has one, is added to
the nested host's trust store first, as a user behind a TLS-inspecting gateway has it on theirs.
Inside, PIXELS_IN_FRESH_HOST=1 makes this test skip (Incus three levels deep is not a user's host).
The suite's log is copied out to /tmp/pixels-fresh-<suite>-test.log.
"""

import concurrent.futures
import glob
import hashlib
import io
import json
import os
import pathlib
import subprocess
import tarfile
import tempfile
import time

import pytest

import isolated
from conftest import PROJECT

ROOT = pathlib.Path(__file__).resolve().parents[2]
FRESH_PROJECT = f"{PROJECT}-fresh"
NETWORK = "pxf" + hashlib.sha256(FRESH_PROJECT.encode()).hexdigest()[:8]
# The nested hosts (Incus, a venv, images and a dir pool each: about 2 GiB apiece) live on a dir
# pool of their own, on the host's disk: the user's pool (an 8 GiB loop file by default, holding
# the user's bases) filled up when they shared it.
POOL = NETWORK
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
CACHE = pathlib.Path(os.path.expanduser("~/.cache/pixels/fresh-hosts"))
IMAGE_CACHE = pathlib.Path(os.path.expanduser("~/.cache/pixels/images"))
# Beyond minbase: python3 (Ansible's modules need it on the host), systemd as PID 1 and udev (as
# on every installed Debian: priority important), python3-apt (on every Debian installed with the
# standard utilities: reportbug needs it), and nothing else. With python3-apt in place Ansible's
# apt module reads the lists as they are instead of refreshing them to install python3-apt first:
# the state in which apt refused the backports default release before the role refreshed the lists
# on its own (without it, that bug hides). The network comes up with systemd-networkd (part of
# systemd), which waits for udev where /sys is writable, as here.
PACKAGES = ["python3", "python3-apt", "systemd", "systemd-sysv", "udev"]
BUILD_VERSION = 1  # bump when the root's recipe changes
# PIXELS_FRESH_HOST_SUITES=bookworm runs one of them only.
DISTROS = {suite: version for suite, version in {"bookworm": "12", "trixie": "13"}.items()
           if suite in os.environ.get("PIXELS_FRESH_HOST_SUITES", "bookworm,trixie").split(",")}

# The README's first command (with the test's vars file); ./run installs make and the rest.
README_SITE = "./run site"
README_TEST = "./run test"
FULL = os.environ.get("PIXELS_FRESH_HOST_FULL") == "1"
if os.environ.get("PIXELS_IN_FRESH_HOST") == "1":
    pytest.skip("already inside a fresh-host test's nested host", allow_module_level=True)
SITE_VARS = """\
pixels_sandboxes:
  - name: probe
    image: debian/12
    provision: false
    devtools: false
"""


def incus(*args, check=True, timeout=900, stdin=None):
    proc = subprocess.run(["incus", *args], capture_output=True, text=True, timeout=timeout, check=False,
                          input=stdin)
    if check and proc.returncode:
        raise AssertionError(f"incus {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def root_tarball(suite):
    """The cached minbase root of ``suite`` as an Incus image tarball, built when missing."""
    key = hashlib.sha1(json.dumps([BUILD_VERSION, suite, MIRROR, SECURITY, PACKAGES]).encode()).hexdigest()[:12]
    tarball = CACHE / f"{suite}-{os.uname().machine}-{key}.tar.gz"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="build-") as build:
        rootfs = pathlib.Path(build, "rootfs")
        proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                               suite, str(rootfs), MIRROR], capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, f"debootstrap {suite} failed: {proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        # The sources a fresh install has (deb822), and no lists: apt knows nothing until updated.
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
            f"Types: deb\nURIs: {MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {SECURITY}\nSuites: {suite}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        subprocess.run(["find", rootfs / "var/lib/apt/lists", rootfs / "var/cache/apt", "-type", "f", "-delete"],
                       check=True)
        (rootfs / "etc/systemd/network/80-eth0.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
        subprocess.run(["systemctl", "--root", rootfs, "enable", "systemd-networkd"], capture_output=True, check=True)
        (rootfs / "etc/machine-id").write_text("")
        (rootfs / "etc/hostname").write_text("fresh\n")
        pathlib.Path(build, "metadata.yaml").write_text(
            f"architecture: {os.uname().machine}\ncreation_date: {int(time.time())}\n"
            f"properties: {{os: debian, release: {suite}, description: fresh {suite} host for tests}}\n")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", build, "-czf",
                        f"{tarball}.part", "metadata.yaml", "rootfs"], check=True)
        os.replace(f"{tarball}.part", tarball)
    for old in CACHE.glob(f"{suite}-{os.uname().machine}-*.tar.gz"):
        if old != tarball:
            old.unlink()
    return tarball


def checkout_tar():
    """The working tree's files (tracked and untracked, not ignored: no .venv) as a tar archive."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name in sorted(filter(None, names)):
            path = ROOT / name
            if path.is_file() or path.is_symlink():
                tar.add(path, arcname=f"pixels/{name}", recursive=False)
    return data.getvalue()


class Host:
    """One nested host: its instance name and a log of every command run in it."""

    def __init__(self, suite):
        self.suite = suite
        self.name = f"fresh-{suite}"
        self.log = []

    def run(self, command, user=None, env=None, timeout=1500, check=True):
        args = ["exec", "--project", FRESH_PROJECT, self.name]
        if user:
            args += ["--user", str(user["uid"]), "--group", str(user["uid"]), "--cwd", f"{user['home']}/pixels",
                     "--env", f"HOME={user['home']}", "--env", f"USER={user['name']}"]
        else:
            args += ["--cwd", "/root", "--env", "HOME=/root"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        started = time.monotonic()
        proc = incus(*args, "--", "sh", "-c", command, check=False, timeout=timeout)
        self.log.append(f"$ {command}  ({time.monotonic() - started:.0f} s, rc {proc.returncode})\n"
                        f"{proc.stdout[-4000:]}{proc.stderr[-3000:]}")
        if check and proc.returncode:
            raise AssertionError(f"{self.suite}: `{command}` failed (rc {proc.returncode}):\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return proc

    def push(self, data, path, mode="0644"):
        data = data.encode() if isinstance(data, str) else data
        proc = subprocess.run(["incus", "file", "push", "--project", FRESH_PROJECT, "--create-dirs", "--mode", mode,
                               "-", f"{self.name}{path}"], input=data, capture_output=True, timeout=600, check=False)
        assert proc.returncode == 0, f"pushing {path} into {self.name}: {proc.stderr.decode()}"


CA_PATH = "/usr/local/share/host-ca.crt"


def host_ca_bundle():
    """The host's CA bundle when it sets one for pip or requests (see the module doc), else None."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
    return bundle if bundle and os.path.exists(bundle) else None


def pip_env():
    return {"PIP_CERT": CA_PATH} if host_ca_bundle() else {}


def boot(host, gateway, archive, ca_bundle):
    # cgroup:rw:force: every cgroup v1 hierarchy of the host mounted read-write inside. Incus'
    # default (cgroup:mixed) leaves out hierarchies it does not co-mount, such as the separate
    # cpu and cpuacct of the machines this project's CI runs on; the nested host's systemd then
    # puts symlinks in their place, on which the inner LXC fails ("Failed to open 9/cpuacct").
    # On a cgroup2-only host it changes nothing that matters.
    incus("init", f"fresh-{host.suite}", host.name, "--project", FRESH_PROJECT,
          "-c", "security.nesting=true", "-c", f"limits.memory={'8GiB' if FULL else '4GiB'}",
          "-c", "raw.lxc=lxc.mount.auto = cgroup:rw:force")
    incus("start", host.name, "--project", FRESH_PROJECT)
    host.run("for i in $(seq 120); do case $(systemctl is-system-running --wait 2>/dev/null) in "
             "running|degraded) exit 0 ;; esac; sleep 1; done; exit 1", timeout=180)
    # A fresh host has a resolver (the bridge's DNS forwards to the host's) and its own name in
    # /etc/hosts (sudo looks it up).
    host.push(f"nameserver {gateway}\n", "/etc/resolv.conf")
    host.push("127.0.0.1\tlocalhost\n127.0.1.1\tfresh\n", "/etc/hosts")
    # minbase has no `ip`: the kernel's routing table says when DHCP has given a default route
    host.run("for i in $(seq 60); do awk '$2 == \"00000000\" {f=1} END {exit !f}' /proc/net/route && exit 0; "
             "sleep 1; done; echo no default route after 60 s; exit 1")
    host.push(archive, "/root/checkout.tar")
    if ca_bundle:
        host.push(pathlib.Path(ca_bundle).read_bytes(), CA_PATH)


def seed_image_cache(host):
    if os.environ.get("PIXELS_FRESH_HOST_BUILD_IMAGE") == "1":
        return
    for tarball in glob.glob(str(IMAGE_CACHE / "debian-12-*.tar.gz")):
        host.push(pathlib.Path(tarball).read_bytes(), f"/root/.cache/pixels/images/{os.path.basename(tarball)}")


NEWCOMER = {"name": "newcomer", "uid": 1000, "home": "/home/newcomer"}


def user_without_sudo(host):
    """On a pristine host a user without sudo runs `./run host`: a clear stop naming root and sudo,
    nothing installed."""
    host.run("useradd -m -u 1000 -s /bin/sh newcomer && tar -C /home/newcomer -xf /root/checkout.tar "
             "&& chown -R newcomer:newcomer /home/newcomer/pixels")
    before = host.run("dpkg-query -W -f='${Package}\\n' | sort", check=False).stdout
    proc = host.run("./run host", user=NEWCOMER, env=pip_env(), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no sudo" in out and "as root" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert host.run("dpkg-query -W -f='${Package}\\n' | sort", check=False).stdout == before, "packages changed"
    assert "backports" not in host.run("ls /etc/apt/sources.list.d/").stdout


def user_with_sudo(host):
    """The user gets sudo as a Debian installer gives it (the sudo package, the sudo group, a
    password), and without a password for now: ./run's apt step has no terminal to ask on."""
    host.run("apt-get update -q && apt-get install -y -q sudo && usermod -aG sudo newcomer "
             "&& echo newcomer:fresh-pass | chpasswd "
             "&& echo 'newcomer ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/newcomer-nopasswd")
    seed_image_cache(host)  # the image role runs as root (become): root's cache


def password_sudo(host):
    """sudo that asks for a password: a stop that says how to give it, then the way it says."""
    host.run("rm /etc/sudoers.d/newcomer-nopasswd && printf 'fresh-pass\\n' > /home/newcomer/.become "
             "&& chown newcomer /home/newcomer/.become && chmod 600 /home/newcomer/.become")
    proc = host.run("./run host", user=NEWCOMER, check=False)
    said = " ".join(proc.stdout.split())
    assert proc.returncode != 0 and "sudo asks for a password" in said, proc.stdout[-4000:]
    assert "ANSIBLE_BECOME_ASK_PASS=true" in said and "Traceback" not in said, proc.stdout[-4000:]
    proc = host.run("./run host", user=NEWCOMER, env={"ANSIBLE_BECOME_PASSWORD_FILE": "/home/newcomer/.become"})
    assert "changed=0" in proc.stdout, proc.stdout[-4000:]


def full_suite(host, ca_bundle, checkout, user=None):
    """The README's second command after the first, in the same nested host, as root (`sudo ./run
    test` for the user with sudo, in the user's clone)."""
    if ca_bundle:
        host.run(f"apt-get install -y ca-certificates && cp {CA_PATH} /usr/local/share/ca-certificates/ "
                 "&& update-ca-certificates")
    # a checkout is a git clone (test_galaxy lists the files as git sees them)
    host.run(f"cd {checkout} && git init -q && git add -A && git -c user.name=fresh -c user.email=fresh@test "
             "commit -qm checkout", user=user)
    log = f"/tmp/pixels-fresh-{host.suite}-test.log"
    proc = host.run(f"cd {checkout} && {README_TEST} > /root/test.log 2>&1", env={"PIXELS_IN_FRESH_HOST": "1"},
                    timeout=3 * 3600, check=False)
    incus("file", "pull", "--project", FRESH_PROJECT, f"{host.name}/root/test.log", log)
    tail = pathlib.Path(log).read_text(errors="replace")[-6000:]
    assert proc.returncode == 0, f"{README_TEST} failed (rc {proc.returncode}); the log is {log}:\n{tail}"
    print(f"{host.suite}: {README_TEST} passed; the log is {log}:\n{tail[-1500:]}")


def setup_host(suite, gateway, archive, ca_bundle):
    """Debian 12 by a user with sudo (after a user without it is stopped), Debian 13 as root."""
    host = Host(suite)
    started = time.monotonic()
    as_user = suite == "bookworm"
    user = NEWCOMER if as_user else None
    checkout = f"{NEWCOMER['home']}/pixels" if as_user else "/root/pixels"
    try:
        boot(host, gateway, archive, ca_bundle)
        if as_user:
            user_without_sudo(host)
            user_with_sudo(host)
        else:
            host.run("tar -xf checkout.tar")
            seed_image_cache(host)
        host.push(SITE_VARS, "/tmp/fresh.yml")
        site = host.run(f"cd {checkout} && {README_SITE} SITE_VARS=/tmp/fresh.yml", user=user, env=pip_env())
        said = " ".join(site.stdout.split())  # the callback wraps long messages
        assert ("with driver dir: incus_host_storage_driver is auto and btrfs cannot work here: "
                "this host runs in a user namespace") in said, site.stdout[-6000:]
        host.run("incus info >/dev/null && incus storage list && incus list")
        # btrfs asked for by name where no loop file can be mounted: a stop naming the variable
        bad = host.run(f"cd {checkout} && .venv/bin/ansible-playbook playbooks/incus_host.yml "
                       "-e incus_host_storage_driver=btrfs -e incus_host_storage_pool=nested-btrfs", check=False)
        said = " ".join(bad.stdout.split())
        assert bad.returncode != 0 and "incus_host_storage_driver is 'btrfs', but" in said, bad.stdout[-4000:]
        assert "user namespace" in said and "Traceback" not in bad.stdout + bad.stderr, bad.stdout[-4000:]
        assert "nested-btrfs" not in host.run("incus storage list --format csv").stdout
        out = host.run("incus exec px-probe -- cat /etc/os-release").stdout
        assert "bookworm" in out, out
        if as_user:
            assert "newcomer" in host.run("getent group incus-admin").stdout
            password_sudo(host)
        if FULL:
            full_suite(host, ca_bundle, checkout, user)
        return time.monotonic() - started, host.log
    except BaseException as exc:
        raise AssertionError(f"{suite}: {exc}\n\n--- log of {host.name} ---\n" + "\n".join(host.log)[-20000:]) \
            from exc


@pytest.fixture(scope="module")
def fresh_project():
    """A project with its own images and profile, and a bridge of its own with NAT (on a free
    subnet); deleted afterwards with everything in it, also when a test fails."""
    problems = isolated.drop(FRESH_PROJECT, NETWORK, POOL)  # an interrupted run's
    assert not problems, problems
    gateway = isolated.ensure_bridge(NETWORK, FRESH_PROJECT)
    try:
        incus("storage", "create", POOL, "dir", "--description", isolated.MARK)
        incus("project", "create", FRESH_PROJECT, "-c", "features.images=true", "-c", "features.profiles=true")
        incus("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={POOL}",
              "--project", FRESH_PROJECT)
        incus("profile", "device", "add", "default", "eth0", "nic", "name=eth0", f"network={NETWORK}",
              "--project", FRESH_PROJECT)
        yield gateway
    finally:
        problems = isolated.drop(FRESH_PROJECT, NETWORK, POOL)
        assert not problems, problems


def test_readme_names_the_command_this_test_runs():
    """The test runs what the README tells a newcomer; they must not drift apart."""
    readme = (ROOT / "README.md").read_text()
    assert f"{README_SITE}    #" in readme and f"{README_TEST}    #" in readme


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600 if FULL else 1200)
def test_fresh_debian_hosts(fresh_project):
    """Debian 12 and 13, side by side: the README's commands make each an Incus host whose
    sandbox runs."""
    ca_bundle = host_ca_bundle()
    archive = checkout_tar()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(DISTROS)) as pool:
        tarballs = dict(zip(DISTROS, pool.map(root_tarball, DISTROS)))
    for suite, tarball in tarballs.items():
        incus("image", "import", str(tarball), "--project", FRESH_PROJECT, "--alias", f"fresh-{suite}")
    print(f"roots ready in {time.monotonic() - started:.0f} s")
    with concurrent.futures.ThreadPoolExecutor(len(DISTROS)) as pool:
        futures = {suite: pool.submit(setup_host, suite, fresh_project, archive, ca_bundle) for suite in DISTROS}
    errors = []
    for suite, future in futures.items():
        try:
            took, _log = future.result()
            print(f"Debian {DISTROS[suite]} ({suite}): README set-up passed in {took:.0f} s")
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n\n".join(errors)
