# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: incus
short_description: Run tasks inside pixels sandboxes through the Incus API
version_added: 0.1.0
description:
  - Runs commands and copies files inside a pixels sandbox (an Incus container named C(px-<name>))
    through the Incus REST API, over the local unix socket or a remote HTTPS daemon.
  - Commands run over the API's websockets with separate stdin, stdout and stderr; files are
    streamed with their mode, owned by the connecting user. No SSH, no address and no C(incus)
    binary are needed.
  - The sandbox is found from O(instance) (C(pixels_instance), set by the
    P(homelab.pixels.sandboxes#inventory) inventory), never from C(ansible_host), which can hold the
    sandbox's IPv4 address for the C(ssh) connection.
  - Settings fall back to the E(PIXELS_*) environment variables, then the pixels CLI's
    C(config.toml), then the defaults, exactly as for the homelab.pixels modules.
author:
  - homelab.pixels developers (@homelab-pixels)
options:
  instance:
    description:
      - The sandbox to run in.
      - A bare sandbox name such as V(mybox) means the instance V(px-mybox); a name that
        starts with V(px-) is the instance name itself.
      - Defaults to the inventory host name. C(pixels_instance) wins over it when both are set.
        C(ansible_host) is never used.
    type: str
    vars:
      - name: inventory_hostname
      - name: pixels_instance
  remote_user:
    description:
      - The user inside the sandbox that runs commands and owns copied files, by name or uid.
      - Its uid, gid, supplementary groups and home are looked up inside the sandbox; commands
        start in its home with E(HOME), E(USER), E(LOGNAME) and E(SHELL) set.
      - Unset means V(root).
    type: str
    vars:
      - name: ansible_user
      - name: pixels_user
    env:
      - name: ANSIBLE_REMOTE_USER
    ini:
      - section: defaults
        key: remote_user
    cli:
      - name: user
    keyword:
      - name: remote_user
  socket:
    description:
      - Path of the local Incus unix socket. Ignored when O(remote) is set.
      - Falls back to C(socket) in the C([incus]) section of the pixels config file, then
        V(/var/lib/incus/unix.socket).
    type: path
    vars:
      - name: pixels_incus_socket
    env:
      - name: PIXELS_INCUS_SOCKET
  remote:
    description:
      - URL of a remote Incus daemon, such as V(https://incus.lan:8443).
      - Needs O(client_cert) and O(client_key) trusted by the server
        (C(incus config trust add-certificate)).
      - Falls back to C(remote) in C([incus]).
    type: str
    vars:
      - name: pixels_incus_remote
    env:
      - name: PIXELS_INCUS_REMOTE
  client_cert:
    description:
      - PEM client certificate for O(remote).
      - Falls back to C(client_cert) in C([incus]).
    type: path
    vars:
      - name: pixels_incus_client_cert
    env:
      - name: PIXELS_INCUS_CLIENT_CERT
  client_key:
    description:
      - Path of the PEM private key of O(client_cert).
      - Falls back to C(client_key) in C([incus]).
    type: path
    vars:
      - name: pixels_incus_client_key
    env:
      - name: PIXELS_INCUS_CLIENT_KEY
  server_cert:
    description:
      - The remote server's own certificate (C(/var/lib/incus/server.crt) on the Incus host).
        It is pinned by fingerprint for the API and the command streams alike;
        E(REQUESTS_CA_BUNDLE), E(CURL_CA_BUNDLE) and E(SSL_CERT_FILE) cannot override it.
      - Without it the server must present a certificate the system trusts.
      - Falls back to C(server_cert) in C([incus]).
    type: path
    vars:
      - name: pixels_incus_server_cert
    env:
      - name: PIXELS_INCUS_SERVER_CERT
  validate_certs:
    description:
      - Verify the remote server's TLS certificate. Only V(false) here turns verification off.
      - A boolean, or one of the strings V(true)/V(false), V(yes)/V(no), V(on)/V(off), V(1)/V(0).
        Anything else is an error, never taken for V(false) (the reason this option is not
        typed C(bool), which Ansible would read leniently).
      - Falls back to C(validate_certs) in C([incus]), then V(true).
    type: raw
    vars:
      - name: pixels_incus_validate_certs
    env:
      - name: PIXELS_INCUS_VALIDATE_CERTS
  project:
    description:
      - Incus project of the sandbox.
      - Falls back to C(project) in C([incus]), then V(default).
    type: str
    vars:
      - name: pixels_incus_project
    env:
      - name: PIXELS_INCUS_PROJECT
  config_file:
    description:
      - Path of the pixels CLI config file read for fallbacks.
      - Defaults to E(PIXELS_CONFIG), then C($XDG_CONFIG_HOME/pixels/config.toml)
        (C(~/.config/pixels/config.toml)). A missing default file is ignored; a missing
        file named here is an error.
    type: path
    vars:
      - name: pixels_config_file
  timeout:
    description:
      - Seconds to wait for Incus to answer a request, to open a command's streams and for a
        C(become) password prompt. Commands themselves may run as long as they need.
    type: int
    default: 30
    vars:
      - name: pixels_incus_timeout
    env:
      - name: PIXELS_INCUS_TIMEOUT
  command_runner:
    description:
      - Keep a small Python program (standard library only, started with the sandbox's
        C(python3) as root) running in the sandbox while the connection lasts, and run the
        connection's third and later commands through it rather than as new Incus execs, as ssh's
        ControlMaster does for ssh. Loops and tasks without pipelining get faster; a task with one
        command is unchanged.
      - It starts each command with the same user, groups, environment and directory as a direct
        exec. Without C(python3) in the sandbox, commands simply stay direct execs.
      - Set V(false) to run every command as its own Incus exec.
    type: bool
    default: true
    vars:
      - name: pixels_command_runner
    env:
      - name: PIXELS_COMMAND_RUNNER
  pipelining:
    description:
      - Pipe each module into the sandbox's Python on stdin rather than copying it in first, so
        that a task is one command instead of four (make a directory, copy, run, clean up).
      - On by default, unlike for the C(ssh) connection. The usual reason to keep it off, sudo's
        C(requiretty), does not apply here; commands never get a terminal either way. Set
        V(false) to copy modules in as files.
      - Ansible does not pipeline C(async) tasks or C(become_method=su).
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: pixels_pipelining
requirements:
  - websockets >= 12 in the Python that runs Ansible on the controller, and pylxd >= 2.4 for a
    remote Incus
notes:
  - A local Incus is reached with the standard library and C(websockets) only, so that a task does
    not pay for importing pylxd; a remote one goes through pylxd's session, with the same
    certificate checks as the modules.
  - With pipelining (the default), a task is one command in the sandbox. The first command of a
    connection is an Incus exec of its own, and so is the second, which also starts the command
    runner (O(command_runner)); the later ones, in loops and in tasks without pipelining, go
    through it.
  - C(become) runs inside the sandbox (C(sudo), C(su)), with or without a password. Commands have
    no terminal; the password is written to their stdin when the prompt appears, and the module
    follows only once become has succeeded.
  - File transfers keep the connecting user's view. The Incus file API reads and writes as root
    and follows symbolic links, so only root's own transfers use it. For any other user, a small
    program (the sandbox's C(python3), standard library) runs as that user, through the same path
    as commands. A copy goes into a new file in the target's directory (created without following
    links) and is renamed over the target, so a symbolic or hard link there is replaced, never
    written through, and a directory the user may not write fails with "Permission denied". A
    fetch reads as the user, and only a regular file (never a device, FIFO or socket).
  - While root becomes an unprivileged user, Ansible hands its temporary directory to that user
    between transfers; root's copies then go the same way and refuse a symbolic link anywhere in
    the path.
  - A fetched file gets the controller's default mode (0666 less the umask), never the mode it
    has in the sandbox.
  - A sandbox that is stopped or does not exist makes the host unreachable with a message that
    says how to start or create it.
  - Root inside the sandbox is not trusted with the controller's resources. A command's stdout and
    stderr are kept whole up to 64 MiB each; a command that prints more is stopped and its task
    fails. The command runner's frames may hold at most 1 MiB, and a frame that has begun must
    arrive within O(timeout) seconds; a runner that breaks these rules (root may have replaced it)
    fails the command at once, with a message that says so.
seealso:
  - module: homelab.pixels.pixels_container
  - plugin: homelab.pixels.sandboxes
    plugin_type: inventory
"""

EXAMPLES = r"""
# inventory.ini: sandboxes by hand (the homelab.pixels.sandboxes inventory sets all of this)
# [sandboxes]
# mybox ansible_connection=homelab.pixels.incus
# other ansible_connection=homelab.pixels.incus pixels_instance=px-other pixels_incus_project=agents

- name: Provision a sandbox as its own user
  hosts: sandboxes
  tasks:
    - name: The agent's user
      ansible.builtin.user:
        name: pixel
        shell: /bin/bash

    - name: Its files, as that user
      ansible.builtin.copy:
        src: dotfiles/
        dest: /home/pixel/
      remote_user: pixel

    - name: Back to root through sudo inside the sandbox
      ansible.builtin.command: apt-get update
      remote_user: pixel
      become: true

- name: A sandbox on a remote Incus
  hosts: far
  vars:
    ansible_connection: homelab.pixels.incus
    pixels_incus_remote: https://incus.lan:8443
    pixels_incus_client_cert: ~/.config/pixels/client.crt
    pixels_incus_client_key: ~/.config/pixels/client.key
    pixels_incus_server_cert: ~/.config/pixels/server.crt
  tasks:
    - ansible.builtin.ping:
"""

import os
import stat
import time
from collections import namedtuple

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.homelab.pixels.plugins.module_utils.backend import STREAM_CHUNK
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError, SandboxUnavailable
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import IncusSocketIO
from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name, sandbox_name
from ansible_collections.homelab.pixels.plugins.module_utils.runner import RUNNER_SOURCE, CommandRunner
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS, resolve
from ansible_collections.homelab.pixels.plugins.module_utils.transfer import (
    DENIED,
    MISSING,
    TRANSFER_SOURCE,
    local_file,
)
from ansible_collections.homelab.pixels.plugins.module_utils.untrusted import printable

display = Display()

ROOT = "root"
# States of a connection's command runner, before there is one.
FIRST = "first command done"
OFF = "off"
# Seconds the third command waits for a runner that has not said hello yet.
RUNNER_START_TIMEOUT = 10


class Account(namedtuple("Account", "name uid gid home env groups prefix")):
    """Who commands run as inside the sandbox.

    ``env`` is added to the command's environment and ``home`` is where it starts. Incus' exec
    sets no supplementary ``groups``: a direct exec joins them through ``prefix`` (setpriv,
    starting as root and dropping to the user); the command runner sets them itself.
    """

    @property
    def exec_ids(self):
        """(uid, gid) that Incus starts a direct exec with."""
        return (0, 0) if self.prefix else (self.uid, self.gid)

    @property
    def runner_ids(self):
        """The identity the command runner (root) switches to; nothing to switch for root."""
        if self.name == ROOT:
            return {"uid": None, "gid": None, "groups": None}
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}


ROOT_ACCOUNT = Account(ROOT, 0, 0, None, {}, (), ())


def parse_passwd(text, user):
    """(name, uid, gid, home, shell) of ``user`` (a name, or a numeric uid) in passwd(5) text,
    or None."""
    for line in to_text(text, errors="surrogate_or_strict").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and (fields[0] == user or (user.isdigit() and fields[2] == user)):
            try:
                return fields[0], int(fields[2]), int(fields[3]), fields[5] or "/", fields[6]
            except ValueError:
                return None
    return None


def parse_group_ids(text, user, primary):
    """Sorted ids of the groups in group(5) text that list ``user`` as a member, but ``primary``."""
    gids = set()
    for line in to_text(text, errors="surrogate_or_strict").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and user in fields[3].split(","):
            try:
                gids.add(int(fields[2]))
            except ValueError:
                continue
    gids.discard(primary)
    return sorted(gids)


def make_account(user, uid, gid, home, shell, groups=(), setpriv=None):
    """The Account of a looked-up user; ``setpriv`` is that program's path in the sandbox."""
    env = {"HOME": home, "USER": user, "LOGNAME": user}
    if shell:
        env["SHELL"] = shell
    prefix = ()
    if groups and setpriv:
        prefix = (setpriv, f"--reuid={uid}", f"--regid={gid}", "--groups=" + ",".join(str(g) for g in groups), "--")
    return Account(user, uid, gid, home, env, tuple(groups), prefix)


def remote_path(path, account):
    """An absolute path inside the sandbox: relative ones (and ~/) start in the user's home."""
    home = account.home or "/root"
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    if not path.startswith("/"):
        path = home.rstrip("/") + "/" + path
    return path


class FileSink:
    """Writes a command's stdout into a local file as it arrives; keeps the first error, so that
    the stream's reader thread never fails."""

    def __init__(self, handle):
        self.handle = handle
        self.error = None

    def __call__(self, data):
        if data is None or self.error is not None:
            return
        try:
            self.handle.write(data)
        except OSError as exc:
            self.error = exc


class Connection(ConnectionBase):
    """Commands and files inside a pixels sandbox, through the Incus API."""

    transport = "homelab.pixels.incus"
    has_pipelining = True
    has_tty = False  # commands get no terminal: become methods that require one are refused up front
    default_user = ROOT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._backend = None
        self._options_key = None
        self._accounts = {}
        self._runners = {}  # instance -> FIRST, OFF or its CommandRunner

    # -- settings and the Incus connection ------------------------------------------

    def _option_values(self):
        return tuple(self.get_option(key) for key in (*CONNECTION_KEYS, "config_file", "timeout"))

    def _settings_params(self):
        """The connection settings from host vars, None where unset.

        Values that Ansible read from the PIXELS_* variables are left to settings.resolve, which
        reads the same variables at the same precedence (after vars, before config.toml) but
        ignores blank ones and refuses booleans it cannot read, as the modules do.
        """
        params = {}
        for key in CONNECTION_KEYS:
            value, origin = self.get_option_and_origin(key)
            params[key] = None if str(origin).startswith("env:") else value
        return params

    def _instance(self):
        value = self.get_option("instance")
        if not value:
            raise AnsibleError("No sandbox to connect to: set pixels_instance (such as px-mybox) for this host.")
        try:
            return instance_name(to_text(value), option="pixels_instance (or the inventory host name)")
        except PixelsError as exc:
            raise AnsibleError(exc.message + " Set pixels_instance to the sandbox's instance name (px-<name>).")

    def _connect(self):
        """The Incus client for this host's settings (kept while a loop reuses the connection)."""
        options = self._option_values()
        if self._backend is not None and options == self._options_key:
            self._connected = True
            return self
        self.close()
        try:
            settings = resolve(self._settings_params(), CONNECTION_KEYS, config_file=self.get_option("config_file"))
        except PixelsError as exc:
            raise AnsibleError(exc.message)
        endpoint = settings.get("remote") or settings.get("socket")
        display.vvv(f"ESTABLISH INCUS CONNECTION TO {endpoint} (project {settings.get('project')})",
                    host=self.get_option("instance"))
        try:
            self._backend = self._make_backend(settings, self.get_option("timeout"))
        except PixelsError as exc:
            raise AnsibleConnectionFailure(exc.message)
        self._options_key = options
        self._connected = True
        return self

    @staticmethod
    def _make_backend(settings, timeout):
        """The local socket with the standard library; a remote Incus through pylxd (its TLS
        pinning and trust checks), imported only then: pylxd, requests and urllib3 take longer
        to import than a task takes to run."""
        if not settings.get("remote"):
            return IncusSocketIO(settings["socket"], settings.get("project"), timeout=timeout)
        from ansible_collections.homelab.pixels.plugins.module_utils.incus import (  # pylint: disable=import-outside-toplevel
            HAS_PYLXD,
            PYLXD_IMPORT_ERROR,
            IncusBackend,
        )
        if not HAS_PYLXD:
            raise AnsibleError(f"A remote Incus needs pylxd in the Python that runs Ansible "
                               f"({PYLXD_IMPORT_ERROR}): pip install -r requirements.txt there.")
        return IncusBackend(timeout=timeout, **settings)

    def _ready(self):
        """(backend, instance, account) for the next call; reconnects when a loop item changed
        the settings of a reused connection."""
        if not self._connected or self._option_values() != self._options_key:
            self._connect()
        instance = self._instance()
        return self._backend, instance, self._account(instance)

    # -- the user inside the sandbox -------------------------------------------------

    def _account(self, instance):
        user = self.get_option("remote_user") or ROOT
        if user == ROOT:
            return ROOT_ACCOUNT
        key = (instance, user)
        if key not in self._accounts:
            try:
                self._accounts[key] = self._lookup_account(instance, user)
            except PixelsError as exc:
                raise AnsibleConnectionFailure(exc.message)
        return self._accounts[key]

    def _lookup_account(self, instance, user):
        backend = self._backend
        entry = parse_passwd(backend.read_file(instance, "/etc/passwd") or b"", user)
        if entry is None:
            return self._lookup_account_nss(instance, user)
        user, uid, gid, home, shell = entry
        groups = parse_group_ids(backend.read_file(instance, "/etc/group") or b"", user, gid)
        setpriv = self._find_setpriv(instance) if groups else None
        if groups and not setpriv:
            display.warning(f"{user} in {instance} belongs to the groups {groups}, but the sandbox has no "
                            f"setpriv (util-linux) to join them: commands that do not go through the "
                            f"command runner run with group {gid} only.")
        return make_account(user, uid, gid, home, shell, groups, setpriv)

    def _lookup_account_nss(self, instance, user):
        """A user that is not in /etc/passwd (LDAP, sssd): ask getent and id inside the sandbox."""
        script = 'getent passwd "$1" || exit 2; id -G "$1"; command -v setpriv || true'
        result = self._backend.execute(instance, ["/bin/sh", "-c", script, "sh", user])
        lines = to_text(result.stdout, errors="surrogate_or_strict").splitlines()
        entry = parse_passwd(lines[0], user) if result.rc == 0 and lines else None
        if entry is None:
            raise PixelsError(
                f"The user {user!r} does not exist in sandbox {sandbox_name(instance)!r} ({instance}): "
                f"create it in a task that runs as root (remote_user: root, ansible.builtin.user), or "
                f"set ansible_user/remote_user to an existing user.")
        user, uid, gid, home, shell = entry
        groups = sorted({int(g) for g in (lines[1].split() if len(lines) > 1 else []) if g.isdigit()} - {gid})
        setpriv = lines[2].strip() if len(lines) > 2 and lines[2].startswith("/") else None
        return make_account(user, uid, gid, home, shell, groups, setpriv)

    def _find_setpriv(self, instance):
        for path in ("/usr/bin/setpriv", "/bin/setpriv"):
            if self._backend.read_file(instance, path, limit=1 << 24) is not None:
                return path
        return None

    # -- commands ------------------------------------------------------------------------

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        backend, instance, account = self._ready()
        argv = [self._play_context.executable or "/bin/sh", "-c", to_text(cmd)]
        prompt = bool(sudoable and self.become and self.become.expect_prompt())
        try:
            with self._start(backend, instance, account, argv, cmd) as session:
                if prompt:
                    self._send_become_password(session)
                if in_data:
                    session.write(to_bytes(in_data))
                session.close_stdin()
                rc, stdout, stderr = session.wait()
        except SandboxUnavailable as exc:
            raise AnsibleConnectionFailure(exc.message)
        except PixelsError as exc:
            raise AnsibleConnectionFailure(f"Running a command in {instance} failed: {exc.message}")
        if prompt:
            stderr = self.become.strip_become_prompt(stderr)
        return rc, stdout, stderr

    def _start(self, backend, instance, account, argv, cmd, stdout_sink=None):
        """The command's ExecSession: through the command runner once it is up, else a direct exec.
        ``stdout_sink`` as for SandboxIO.exec_start."""
        runner = self._runner(backend, instance)
        if runner is not None:
            display.vvv(f"EXEC {to_text(cmd)} (in {instance} as {account.name}, through the command runner)",
                        host=instance)
            try:
                return runner.run(argv, env=account.env, cwd=account.home, stdout_sink=stdout_sink,
                                  **account.runner_ids)
            except PixelsError as exc:
                display.vvv(f"Command runner in {instance} unusable ({exc.message}): direct exec", host=instance)
                self._runners[instance] = OFF
                runner.close()
        display.vvv(f"EXEC {to_text(cmd)} (in {instance} as {account.name})", host=instance)
        uid, gid = account.exec_ids
        return backend.exec_start(instance, [*account.prefix, *argv], env=account.env, user=uid, group=gid,
                                  cwd=account.home, stdout_sink=stdout_sink)

    def _runner(self, backend, instance):
        """The command runner of ``instance`` when it is ready, else None.

        The first command of a connection goes directly; the second starts the runner beside
        itself; the ones after that use it (waiting a moment for its hello if need be).
        """
        state = self._runners.get(instance)
        if state is None or state is OFF:
            if state is None:
                self._runners[instance] = FIRST
            return None
        if state is FIRST:
            if not self.get_option("command_runner"):
                self._runners[instance] = OFF
                return None
            try:
                self._runners[instance] = CommandRunner(
                    lambda sink: backend.exec_start(instance, ["python3", "-I", "-c", RUNNER_SOURCE], stdout_sink=sink),
                    where=instance, frame_deadline=self.get_option("timeout"))
            except PixelsError as exc:
                display.vvv(f"No command runner in {instance}: {exc.message}", host=instance)
                self._runners[instance] = OFF
            return None
        try:
            # It started during the previous command: by now it has said hello, or soon will.
            if state.ready(RUNNER_START_TIMEOUT):
                return state
            problem = f"no hello within {RUNNER_START_TIMEOUT} s"
        except PixelsError as exc:
            problem = exc.message
        # Not waited for again: a runner that never answers must not slow every later command.
        display.vvv(f"No command runner in {instance}: {problem}", host=instance)
        self._runners[instance] = OFF
        state.close()
        return None

    def _send_become_password(self, session):
        """Answer the become prompt on stdin, then wait until become succeeded.

        The module goes to stdin only after that, so that a wrong password never makes sudo read
        the module as its next attempt.
        """
        become = self.become
        deadline = time.monotonic() + self.get_option("timeout")
        sent = False
        while True:
            stdout, stderr = session.output()
            if become.check_success(stdout) or become.check_success(stderr):
                return
            if sent and (become.check_incorrect_password(stderr) or become.check_incorrect_password(stdout)):
                raise AnsibleError(f"Incorrect {become.name} password")
            if not sent and (become.check_password_prompt(stderr) or become.check_password_prompt(stdout)):
                session.write(to_bytes(become.get_option("become_pass") or "") + b"\n")
                sent = True
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not session.wait_output(remaining):
                raise AnsibleError(f"Timeout ({self.get_option('timeout')} s) waiting for the {become.name} "
                                   f"prompt or its success: {printable(to_text(stderr or stdout))[-2000:]}")
            if session.output() == (stdout, stderr):
                return  # the command ended without asking: its output tells what happened

    # -- files -----------------------------------------------------------------------------

    def _file_call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SandboxUnavailable as exc:
            raise AnsibleConnectionFailure(exc.message)
        except PixelsError as exc:
            if exc.details.get("missing"):
                raise AnsibleFileNotFound(exc.message)
            raise AnsibleError(exc.message)

    def _transfer_account(self, account):
        """(account, strict) that moves files with TRANSFER_SOURCE, or None for the Incus file API.

        The file API writes and reads as root and follows symbolic links: right for root's own
        files, wrong in a directory another user owns, where that user could point it anywhere.
        So any other user moves his files himself, and the kernel checks each step as him (his
        own links lead only where he could go anyway). Root does so too while it becomes another
        user: Ansible then gives its temporary directory to that user between transfers, so root
        writes there without following a symbolic link anywhere in the path (``strict``).
        """
        if account.name != ROOT:
            return account, False
        become_user = None
        if self.become is not None:
            try:
                become_user = self.become.get_option("become_user")
            except KeyError:  # a become plugin without that option
                become_user = None
        if become_user and to_text(become_user) not in (ROOT, "0"):
            return account, True
        return None

    def _transfer(self, backend, instance, account, argv, what, source=None, size=0, sink=None):
        """Run TRANSFER_SOURCE (``argv``) as ``account``, with ``size`` bytes of ``source`` on its
        stdin and its stdout into ``sink``; its ExecResult."""
        try:
            with self._start(backend, instance, account, argv, what, stdout_sink=sink) as session:
                left = size if source is not None else 0
                while left > 0:
                    chunk = source.read(min(STREAM_CHUNK, left))
                    if not chunk:
                        break  # the file shrank: the helper reports the missing bytes
                    left -= len(chunk)
                    if not session.write(chunk) or session.output()[1]:
                        break  # it stopped reading, or already said why it failed
                session.close_stdin()
                return session.wait()
        except SandboxUnavailable as exc:
            raise AnsibleConnectionFailure(exc.message)
        except PixelsError as exc:
            raise AnsibleConnectionFailure(f"{what} in {instance} failed: {exc.message}")

    @staticmethod
    def _transfer_failed(result, what, instance, account, strict):
        """The Ansible error for a failed TRANSFER_SOURCE run."""
        reason = printable(result.stderr).strip() or f"exit code {result.rc}"
        who = f"as {account.name}" + (" for a become user" if strict else "")
        message = f"{what} in {instance} {who} failed: {reason}"
        if result.rc == 127:
            return AnsibleError(f"{message}. Moving files as a user other than root needs python3 in the "
                                f"sandbox: install it as root (remote_user: root, or the raw module).")
        if result.rc == MISSING:
            return AnsibleFileNotFound(message)
        if result.rc == DENIED:
            return AnsibleError(f"{message}. Files move with the permissions of the connection's user "
                                f"({account.name}); use a place that user may write or read, or connect "
                                f"as root (remote_user: root) for it.")
        return AnsibleError(message)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        backend, instance, account = self._ready()
        out_path = remote_path(to_text(out_path), account)
        display.vvv(f"PUT {in_path} TO {out_path} (in {instance})", host=instance)
        if not os.path.isfile(to_bytes(in_path)):
            raise AnsibleFileNotFound(f"file or module does not exist: {to_native(in_path)}")
        how = self._transfer_account(account)
        if how is None:
            self._file_call(backend.put_file, instance, to_text(in_path), out_path, uid=account.uid, gid=account.gid)
            return
        account, strict = how
        what = f"Copying {to_text(in_path)} to {out_path}"
        with open(to_bytes(in_path), "rb") as source:
            info = os.fstat(source.fileno())
            mode = stat.S_IMODE(info.st_mode)
            if strict:  # no root-owned setuid file in a directory another user owns
                mode &= ~(stat.S_ISUID | stat.S_ISGID)
            argv = ["python3", "-I", "-c", TRANSFER_SOURCE, "put", out_path, f"{mode:o}",
                    str(info.st_size), "strict" if strict else "follow"]
            result = self._transfer(backend, instance, account, argv, what, source=source, size=info.st_size)
        if result.rc != 0:
            raise self._transfer_failed(result, what, instance, account, strict)

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        backend, instance, account = self._ready()
        in_path = remote_path(to_text(in_path), account)
        display.vvv(f"FETCH {in_path} TO {out_path} (in {instance})", host=instance)
        how = self._transfer_account(account)
        if how is None:
            self._file_call(backend.fetch_file, instance, in_path, to_text(out_path))
            return
        account, strict = how
        what = f"Fetching {in_path} to {to_text(out_path)}"
        argv = ["python3", "-I", "-c", TRANSFER_SOURCE, "get", in_path, "strict" if strict else "follow"]
        try:
            with local_file(to_text(out_path)) as handle:
                sink = FileSink(handle)
                result = self._transfer(backend, instance, account, argv, what, sink=sink)
                if result.rc != 0:
                    raise self._transfer_failed(result, what, instance, account, strict)
                if sink.error is not None:
                    raise AnsibleError(f"{what}: writing {to_text(out_path)} failed: {sink.error}")
        except OSError as exc:
            raise AnsibleError(f"{what}: {to_text(out_path)}: {exc}")

    # -- lifecycle ------------------------------------------------------------------------

    def reset(self):
        self.close()

    def close(self):
        backend, self._backend = self._backend, None
        runners, self._runners = self._runners, {}
        self._options_key = None
        self._accounts = {}
        self._connected = False
        for runner in runners.values():
            if isinstance(runner, CommandRunner):
                runner.close()
        if backend is not None:
            backend.close()
