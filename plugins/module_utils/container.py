# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pixels_container does to one sandbox, shared with pixels_sandboxes (many at once).

``module`` is anything with ``params``, ``backend``, ``check_mode`` and ``settings(*names)``:
a PixelsModule, or one entry of a pixels_sandboxes call.
"""

from __future__ import annotations

import concurrent.futures

from ansible_collections.homelab.pixels.plugins.module_utils.backend import META_BASE
from ansible_collections.homelab.pixels.plugins.module_utils.bases import newest_checkpoint
from ansible_collections.homelab.pixels.plugins.module_utils.egress_apply import release_host_layer
from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import instance_name, parse_source
from ansible_collections.homelab.pixels.plugins.module_utils.pixels_module import WAIT_ARGS
from ansible_collections.homelab.pixels.plugins.module_utils.settings import CONNECTION_KEYS

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started",
               choices=["present", "started", "stopped", "restarted", "absent"]),
    image=dict(type="str"),
    image_server=dict(type="str"),
    source=dict(type="str"),
    base=dict(type="str"),
    cpu=dict(type="int"),
    memory=dict(type="int"),
    pool=dict(type="str"),
    description=dict(type="str", default=""),
    **WAIT_ARGS,
    stop_timeout=dict(type="int", default=30),
)
MUTUALLY_EXCLUSIVE = [("image", "source", "base")]

MIN_MEMORY = 64


def check_limits(module, cpu, memory):
    """Range checks before anything changes; the host's size costs one request."""
    if cpu is None and memory is None:
        return
    if cpu is not None and cpu < 1:
        raise PixelsError(f"cpu={cpu} is out of range: give at least 1 CPU.")
    if memory is not None and memory < MIN_MEMORY:
        raise PixelsError(f"memory={memory} is out of range: give at least {MIN_MEMORY} (MiB).")
    host_cpu, host_memory = module.backend.host_limits()
    if cpu is not None and cpu > host_cpu:
        raise PixelsError(f"cpu={cpu} is out of range: the Incus host has {host_cpu} CPUs.")
    if memory is not None and memory > host_memory:
        raise PixelsError(f"memory={memory} is out of range: the Incus host has {host_memory} MiB.")


def removed_after(backend, instance, exc, what):
    """The error for a new ``what`` that failed after it was made, once it is removed again (the
    original message stays first, also when the removal fails)."""
    try:
        backend.delete(instance)
    except PixelsError as gone:
        return PixelsError(f"{exc.message} Removing the new {what} failed too ({gone.message}): remove it "
                           f"with 'incus delete --force {instance}'.")
    return PixelsError(f"{exc.message} The new {what} was removed again.")


def summary(sandbox):
    if sandbox is None:
        return {"state": "absent"}
    return {"state": sandbox.status, "cpu": sandbox.cpu, "memory": sandbox.memory}


def create(module, instance, state, source):
    params = module.params
    start = state != "stopped"
    metadata = None
    if params["base"]:
        source = newest_checkpoint(module.backend, params["base"])  # fails clearly when not built
        metadata = {META_BASE: params["base"]}
    if source:
        source_instance, label = source
        check_limits(module, params["cpu"], params["memory"])
        if module.check_mode:
            module.backend.list_checkpoints(source_instance)  # fails clearly when missing
            if label and label not in [c.label for c in module.backend.list_checkpoints(source_instance)]:
                raise PixelsError(f"source={params['source']!r}: no checkpoint {label!r}.")
            return
        module.backend.clone_sandbox(instance, source_instance, label, cpu=params["cpu"],
                                     memory=params["memory"], description=params["description"],
                                     start=start, metadata=metadata)
    else:
        settings = module.settings("image", "image_server", "cpu", "memory", "pool")
        check_limits(module, settings["cpu"], settings["memory"])
        if module.check_mode:
            return
        module.backend.create_sandbox(instance, settings["image"], settings["image_server"],
                                      cpu=settings["cpu"], memory=settings["memory"],
                                      pool=settings["pool"], description=params["description"],
                                      start=start)
    if start and params["wait"]:
        try:
            module.backend.wait_for_address(instance, params["wait_timeout"])
        except PixelsError as exc:
            raise removed_after(module.backend, instance, exc, "sandbox") from None


def reconcile(module, instance, sandbox, state):
    """Bring an existing sandbox to the wanted limits and state; True when changed."""
    params = module.params
    backend = module.backend
    changes = {}
    if params["cpu"] is not None and params["cpu"] != sandbox.cpu:
        changes["cpu"] = params["cpu"]
    if params["memory"] is not None and params["memory"] != sandbox.memory:
        changes["memory"] = params["memory"]
    if changes:
        check_limits(module, changes.get("cpu"), changes.get("memory"))
    action = None
    if state == "started" and not sandbox.running:
        action = "start"
    elif state == "stopped" and sandbox.status != "stopped":
        action = "stop"
    elif state == "restarted":
        action = "restart" if sandbox.running else "start"
    if module.check_mode or not (changes or action):
        return bool(changes or action)
    if changes:
        backend.set_limits(instance, **changes)
    if action == "start":
        backend.start(instance)
    elif action == "stop":
        backend.stop(instance, params["stop_timeout"])
    elif action == "restart":
        backend.restart(instance, params["stop_timeout"])
    if action in ("start", "restart") and params["wait"]:
        backend.wait_for_address(instance, params["wait_timeout"])
    return True


def predicted(module, sandbox, state):
    """What check mode expects the sandbox to look like afterwards."""
    params = module.params
    after = summary(sandbox) if sandbox else {"state": "stopped", "cpu": None, "memory": None}
    if sandbox is None and not (params["source"] or params["base"]):
        defaults = module.settings("cpu", "memory")
        after.update(cpu=defaults["cpu"], memory=defaults["memory"])
    for key in ("cpu", "memory"):
        if params[key] is not None:
            after[key] = params[key]
    if state in ("started", "restarted") or (state == "present" and sandbox is None):
        after["state"] = "running"
    elif state == "stopped":
        after["state"] = "stopped"
    return after


def ensure(module):
    """pixels_container's work for ``module`` (params, backend, check_mode, settings()): its result."""
    params = module.params
    state = params["state"]
    instance = instance_name(params["name"])
    source = parse_source(params["source"]) if params["source"] else None
    if source and source[0] == instance:
        raise PixelsError(f"source={params['source']!r} is the sandbox itself: clone from another sandbox.")
    if params["wait_timeout"] < 1 or params["stop_timeout"] < 0:
        raise PixelsError("wait_timeout must be at least 1 and stop_timeout at least 0 (seconds).")

    backend = module.backend
    sandbox = backend.get_sandbox(instance)
    before = summary(sandbox)

    if state == "absent":
        if sandbox is not None and not module.check_mode:
            release_host_layer(backend, instance, sandbox)
            backend.delete(instance)
        return dict(changed=sandbox is not None, sandbox={},
                    diff={"before": before, "after": {"state": "absent"}})

    if sandbox is None:
        create(module, instance, state, source)
        changed = True
    else:
        changed = reconcile(module, instance, sandbox, state)

    if module.check_mode:
        after = predicted(module, sandbox, state)
        result = sandbox.as_dict() if sandbox else {"name": params["name"], "instance": instance}
    else:
        current = backend.get_sandbox(instance)
        after = summary(current)
        result = current.as_dict() if current else {}
    return dict(changed=changed, sandbox=result, diff={"before": before, "after": after})


# -- many sandboxes at once (pixels_sandboxes) ----------------------------------------------

ENTRY_SPEC = {key: value for key, value in ARGUMENT_SPEC.items()
              if key not in ("wait", "wait_timeout", "stop_timeout")}
MANY_ARGUMENT_SPEC = dict(
    sandboxes=dict(type="list", elements="dict", required=True, options=ENTRY_SPEC,
                   mutually_exclusive=MUTUALLY_EXCLUSIVE),
    parallel=dict(type="int", default=10),
    **WAIT_ARGS,
    stop_timeout=dict(type="int", default=30),
)


class Entry:
    """One sandbox of a pixels_sandboxes call, shaped like a module for ensure()."""

    def __init__(self, params, check_mode, connect, settings):
        self.params = params
        self.check_mode = check_mode
        self._connect = connect
        self._settings = settings
        self._backend = None

    def settings(self, *names):
        return self._settings(self.params, names)

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._connect()  # one connection per thread
        return self._backend

    def close(self):
        if self._backend is not None:
            self._backend.close()


def ensure_many(params, check_mode, connect, settings):
    """ensure() for every entry of params["sandboxes"], side by side in threads.

    ``connect()`` makes a backend, ``settings(params, names)`` resolves defaults. Returns
    (results in the entries' order, failure message or None); a failed entry does not stop
    the others, and each removes what it half-made, as pixels_container does.
    """
    names = [entry["name"] for entry in params["sandboxes"]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PixelsError(f"sandboxes: {', '.join(duplicates)} appear more than once; give each sandbox once.")
    if params["parallel"] < 1:
        raise PixelsError(f"parallel={params['parallel']} is out of range: give how many sandboxes to work on "
                          f"at the same time, at least 1.")
    shared = {key: params[key] for key in ("wait", "wait_timeout", "stop_timeout")}
    shared.update({key: params.get(key) for key in CONNECTION_KEYS + ("config_file",)})

    def one(entry_params):
        entry = Entry(dict(shared, **entry_params), check_mode, connect, settings)
        try:
            return dict(ensure(entry), name=entry_params["name"])
        except PixelsError as exc:
            return dict(exc.details, name=entry_params["name"], failed=True, changed=False, msg=exc.message)
        finally:
            entry.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=params["parallel"]) as pool:
        results = list(pool.map(one, params["sandboxes"]))
    failed = [f"{r['name']}: {r['msg']}" for r in results if r.get("failed")]
    return results, (" ".join(failed) if failed else None)
