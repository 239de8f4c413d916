# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bases and the site plan: validation of pixels_bases/pixels_sandboxes and the build order.

A base ``dev`` is the instance ``px-base-dev`` with ``user.pixels.base=dev``; sandboxes from
it clone its newest checkpoint. Everything here except ``newest_checkpoint`` is pure logic,
so that bad vars files are refused before anything is created (and unit-tested without Incus).
"""

from __future__ import annotations

import os

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError
from ansible_collections.homelab.pixels.plugins.module_utils.names import PREFIX, instance_name, parse_source

BASE_PREFIX = "base-"

BASE_KEYS = {
    "name": str, "image": str, "from": str, "setup": str, "script": str,
    "description": str, "rebuild": bool,
}
SANDBOX_KEYS = {
    "name": str, "base": str, "image": str, "source": str, "cpu": int, "memory": int,
    "egress": dict, "provision": (bool, dict), "devtools": (bool, dict), "state": str,
    "description": str,
}
EGRESS_KEYS = {"mode": str, "allow": list, "deny": list, "domains": list}
EGRESS_MODES = ("unrestricted", "agent", "allowlist")
# Short keys of the option dicts -> the role variables they set.
PROVISION_KEYS = {"ssh_keys": list, "dns": list, "env": dict, "ca_certificates": list}
DEVTOOLS_KEYS = {"installer": str, "tools": dict, "wait": bool}  # tools: name -> version
STATES = ("present", "started", "stopped", "absent")

TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean (true/false)", dict: "a dict",
              list: "a list"}


def base_instance(name, option="name"):
    """``dev`` -> ``px-base-dev``; ``option`` is what the message calls a bad name."""
    if not isinstance(name, str) or not name:
        raise PixelsError(f"{option} must be a non-empty string such as 'dev'.")
    try:
        return instance_name(BASE_PREFIX + name, option)
    except PixelsError:
        raise PixelsError(
            f"{option}={name!r} is not a valid base name: use letters, digits and hyphens, start and end "
            f"with a letter or digit, and keep it to {63 - len(PREFIX) - len(BASE_PREFIX)} characters "
            f"(the instance is named '{PREFIX}{BASE_PREFIX}<name>')."
        ) from None


def base_of(sandbox):
    """The base name when a Sandbox (backend.Sandbox) is a base container, else None."""
    name = sandbox.metadata.get("user.pixels.base")
    if name and sandbox.instance == PREFIX + BASE_PREFIX + name:
        return name
    return None


def newest_checkpoint(backend, name, option="base"):
    """(instance, label) of the newest checkpoint (by creation time) of base ``name``, given as
    ``option`` (what the messages call it)."""
    instance = base_instance(name, option)
    sandbox = backend.get_sandbox(instance)
    if sandbox is None:
        raise PixelsError(
            f"{option}={name!r}: the base is not built (no instance {instance}): build it with "
            f"'ansible-playbook homelab.pixels.base_build -e name={name}' or site.yml."
        )
    checkpoints = sorted(backend.list_checkpoints(instance), key=lambda c: c.created_at or "")
    if not checkpoints:
        raise PixelsError(
            f"{option}={name!r}: {instance} has no checkpoint (its build did not finish): rebuild it "
            f"with 'ansible-playbook homelab.pixels.base_build -e name={name} -e rebuild=true'."
        )
    return instance, checkpoints[-1].label


def _type_ok(value, expected):
    types = expected if isinstance(expected, tuple) else (expected,)
    for kind in types:
        # bool is an int in Python: never accept true for cpu, nor 1 for a boolean.
        if kind is int and isinstance(value, bool):
            continue
        if isinstance(value, kind):
            return True
    return False


def _type_name(expected):
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(TYPE_NAMES[t] for t in types)


def _check_keys(entry, keys, where, errors):
    """Unknown keys and wrong types of one dict; False when it is not a dict at all."""
    if not isinstance(entry, dict):
        errors.append(f"{where} must be a dict, got {type(entry).__name__}: {entry!r}.")
        return False
    for key in entry:
        if key not in keys:
            errors.append(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(keys))}.")
    for key, expected in keys.items():
        if key in entry and entry[key] is not None and not _type_ok(entry[key], expected):
            errors.append(f"{where}.{key} must be {_type_name(expected)}, got {type(entry[key]).__name__}: {entry[key]!r}.")
    return True


def _label(kind, index, entry):
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{kind}[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _valid_entries(entries, var, keys, kind, errors):
    """(where, name, entry) of each entry with known keys, a valid name and no earlier twin;
    the others are reported in ``errors``."""
    seen = set()
    for index, entry in enumerate(entries):
        where = _label(var, index, entry)
        if not _check_keys(entry, keys, where, errors) or not _check_name(entry.get("name"), where, errors, kind):
            continue
        name = entry["name"]
        if name in seen:
            errors.append(f"{where}: {kind} {name!r} is declared twice in {var}.")
            continue
        seen.add(name)
        yield where, name, entry


def _check_name(name, where, errors, kind):
    if not isinstance(name, str) or not name:
        errors.append(f"{where}.name is required: give the {kind} a name such as 'dev'.")
        return False
    try:
        if kind == "base":
            base_instance(name, f"{where}.name")
        else:
            instance_name(name, f"{where}.name")
    except PixelsError as exc:
        errors.append(exc.message)
        return False
    return True


def _find_cycle(parents, start):
    """The cycle reached from ``start`` as a list of names, or None."""
    seen = []
    node = start
    while node in parents and parents[node]:
        if node in seen:
            return seen[seen.index(node):] + [node]
        seen.append(node)
        node = parents[node]
    return None


def _resolve(path, directory):
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(directory, path))


def plan(bases, sandboxes, builtin_bases=(), existing=None, base_image=None, directory=".",
         rebuild=(), build="all", wanted=(), bases_var="pixels_bases", sandboxes_var="pixels_sandboxes"):
    """Validate bases and sandboxes; what to build, in order, and what to make.

    ``existing`` maps base names to their number of checkpoints (bases on Incus).
    ``build`` is ``all`` (every declared base and what sandboxes need) or ``needed``
    (only what the sandboxes, ``wanted`` and ``rebuild`` need). Raises PixelsError naming
    every problem.
    """
    existing = dict(existing or {})
    errors = []
    if bases is None:
        bases = []
    if sandboxes is None:
        sandboxes = []
    if not isinstance(bases, list):
        raise PixelsError(f"{bases_var} must be a list of bases (dicts with name and image or from), got {type(bases).__name__}.")
    if not isinstance(sandboxes, list):
        raise PixelsError(f"{sandboxes_var} must be a list of sandboxes (dicts with a name), got {type(sandboxes).__name__}.")

    # Built-ins first; a declared base of the same name replaces the built-in one.
    catalog = {}
    for entry in builtin_bases:
        item = dict(entry)
        if item.get("image") is None and item.get("from") is None:
            item["image"] = base_image
        catalog[item["name"]] = dict(item, builtin=True, where=f"built-in base {item['name']}")
    declared = []
    for where, name, entry in _valid_entries(bases, bases_var, BASE_KEYS, "base", errors):
        declared.append(name)
        if entry.get("image") and entry.get("from"):
            errors.append(f"{where}: set either image or from, not both (from: {entry['from']!r}, image: {entry['image']!r}).")
        elif not entry.get("image") and not entry.get("from"):
            errors.append(f"{where}: set image (such as debian/12) or from (a parent base such as dev).")
        if entry.get("setup") and entry.get("script"):
            errors.append(f"{where}: set either setup (a task file) or script (a shell script), not both.")
        for key in ("setup", "script"):
            if isinstance(entry.get(key), str):
                path = _resolve(entry[key], directory)
                if not os.path.isfile(path):
                    errors.append(f"{where}.{key}: file {path} does not exist (relative paths start from {directory}).")
        catalog[name] = dict(entry, builtin=False, where=where)

    parents = {name: item.get("from") for name, item in catalog.items()}
    for name, item in catalog.items():
        parent = item.get("from")
        if parent and parent not in catalog and parent not in existing:
            if item["builtin"]:
                continue  # only an error when the built-in base is used (below)
            errors.append(
                f"{item['where']}: from: {parent!r} is not a declared base, a built-in base "
                f"({', '.join(sorted(n for n, i in catalog.items() if i['builtin'])) or 'none'}) "
                f"nor a base built on Incus."
            )
    reported = set()
    for name in catalog:
        cycle = _find_cycle(parents, name)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            errors.append(f"bases form a cycle: {' -> '.join(cycle)} ({catalog[cycle[0]]['where']}): "
                          f"make one of them start from an image.")

    names = []
    used = []
    for where, name, entry in _valid_entries(sandboxes, sandboxes_var, SANDBOX_KEYS, "sandbox", errors):
        names.append(name)
        if name.startswith(BASE_PREFIX):
            errors.append(f"{where}.name: names starting with '{BASE_PREFIX}' are kept for bases (px-base-<base>): rename {name!r}.")
        origins = [k for k in ("base", "image", "source") if entry.get(k)]
        if len(origins) > 1:
            errors.append(f"{where}: set only one of base, image and source (got {', '.join(origins)}).")
        state = entry.get("state") or "started"
        if state not in STATES:
            errors.append(f"{where}.state: {state!r} is not one of {', '.join(STATES)}.")
        base = entry.get("base")
        if isinstance(base, str) and base and state != "absent":
            if base not in catalog and base not in existing:
                errors.append(
                    f"{where}.base: base {base!r} is missing: declare it in {bases_var}, use a built-in "
                    f"base ({', '.join(sorted(n for n, i in catalog.items() if i['builtin'])) or 'none'}), "
                    f"or build it first."
                )
            else:
                used.append(base)
        if isinstance(entry.get("source"), str) and entry["source"]:
            try:
                parse_source(entry["source"], f"{where}.source")
            except PixelsError as exc:
                errors.append(exc.message)
        egress = entry.get("egress")
        if isinstance(egress, dict) and _check_keys(egress, EGRESS_KEYS, f"{where}.egress", errors):
            if egress.get("mode") not in EGRESS_MODES:
                errors.append(f"{where}.egress.mode: {egress.get('mode')!r} is not one of {', '.join(EGRESS_MODES)}.")
        for key, keys in (("provision", PROVISION_KEYS), ("devtools", DEVTOOLS_KEYS)):
            if isinstance(entry.get(key), dict):
                _check_keys(entry[key], keys, f"{where}.{key}", errors)

    for option, names_ in (("rebuild", rebuild), ("base", wanted)):
        for name in names_:
            if name not in catalog and name not in existing:
                errors.append(f"{option}: base {name!r} is neither declared in {bases_var}, a built-in base "
                              f"({', '.join(sorted(n for n, i in catalog.items() if i['builtin'])) or 'none'}), "
                              f"nor built on Incus.")
    if errors:
        raise PixelsError(" ".join(errors), errors=errors)

    # What to build: the wanted bases and their missing ancestors, parents first. A built
    # base is used as it is (its parents are not needed), unless it is to be rebuilt.
    rebuild = set(rebuild) | {n for n in declared if catalog[n].get("rebuild")}
    roots = (list(declared) if build == "all" else []) + used + list(wanted) + sorted(rebuild)
    to_build = []

    def visit(name):
        if name in to_build or name not in catalog:
            return  # an undeclared base built on Incus is used as it is
        if existing.get(name) and name not in rebuild:
            return
        if catalog[name].get("from"):
            visit(catalog[name]["from"])
        to_build.append(name)

    for name in roots:
        visit(name)
    builds = []
    for name in to_build:
        item = catalog[name]
        builds.append({
            "name": name,
            "instance": base_instance(name),
            "image": item.get("image"),
            "from": item.get("from"),
            "setup": _resolve(item["setup"], directory) if item.get("setup") and not item["builtin"] else item.get("setup"),
            "script": _resolve(item["script"], directory) if item.get("script") and not item["builtin"] else item.get("script"),
            "description": item.get("description") or f"pixels base {name}",
            "builtin": item["builtin"],
            "recreate": name in existing,  # half-made or asked to rebuild: start from scratch
        })

    pending = {b["name"] for b in builds}
    result = []
    for entry in sandboxes:
        item = {key: entry.get(key) for key in SANDBOX_KEYS}
        item["state"] = item["state"] or "started"
        item["instance"] = instance_name(item["name"])
        item["provision"] = _options(item["provision"])
        item["devtools"] = _options(item["devtools"])
        item["base_pending"] = bool(item["base"]) and item["base"] in pending
        # Clones of sandboxes declared here wait for the first wave.
        item["wave"] = 2 if item["source"] and parse_source(item["source"])[0] in [instance_name(n) for n in names] else 1
        result.append(item)
    return {"bases": builds, "sandboxes": result}


def _options(value):
    """provision/devtools: unset or true -> {} (role defaults), false -> None, dict -> itself."""
    if value is None or value is True:
        return {}
    if value is False:
        return None
    return dict(value)
