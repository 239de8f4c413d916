# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option fallbacks shared with the pixels CLI.

A value comes from the task option, else the ``PIXELS_*`` environment
variable, else ``~/.config/pixels/config.toml``, else the built-in default.
"""

from __future__ import annotations

import os
from collections import namedtuple

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

from ansible_collections.homelab.pixels.plugins.module_utils.errors import PixelsError

Setting = namedtuple("Setting", "env section key default kind")

DEFAULT_SOCKET = "/var/lib/incus/unix.socket"
DEFAULT_IMAGE_SERVER = "https://images.linuxcontainers.org"

SETTINGS = {
    "socket": Setting("PIXELS_INCUS_SOCKET", "incus", "socket", DEFAULT_SOCKET, "path"),
    "remote": Setting("PIXELS_INCUS_REMOTE", "incus", "remote", None, "str"),
    "client_cert": Setting("PIXELS_INCUS_CLIENT_CERT", "incus", "client_cert", None, "path"),
    "client_key": Setting("PIXELS_INCUS_CLIENT_KEY", "incus", "client_key", None, "path"),
    "server_cert": Setting("PIXELS_INCUS_SERVER_CERT", "incus", "server_cert", None, "path"),
    "project": Setting("PIXELS_INCUS_PROJECT", "incus", "project", "default", "str"),
    "validate_certs": Setting("PIXELS_INCUS_VALIDATE_CERTS", "incus", "validate_certs", True, "bool"),
    "image": Setting("PIXELS_DEFAULT_IMAGE", "defaults", "image", "ubuntu/24.04", "str"),
    "image_server": Setting("PIXELS_DEFAULT_IMAGE_SERVER", "defaults", "image_server", DEFAULT_IMAGE_SERVER, "str"),
    "cpu": Setting("PIXELS_DEFAULT_CPU", "defaults", "cpu", 2, "int"),
    "memory": Setting("PIXELS_DEFAULT_MEMORY", "defaults", "memory", 2048, "int"),
    "pool": Setting("PIXELS_DEFAULT_POOL", "defaults", "pool", None, "str"),
}

CONNECTION_KEYS = ("socket", "remote", "client_cert", "client_key", "server_cert", "project", "validate_certs")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def default_config_file(environ=None):
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pixels", "config.toml")


def load_config_file(path, explicit=False):
    """The parsed config.toml, or {} when it does not exist (unless named explicitly)."""
    if not os.path.exists(path):
        if explicit:
            raise PixelsError(f"config_file={path!r} does not exist: point it at a pixels config.toml or leave it unset.")
        return {}
    if tomllib is None:
        raise PixelsError(f"Reading {path} needs Python 3.11+ or the 'tomli' package on the controller's Python.")
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise PixelsError(f"Cannot read the pixels config file {path}: {exc.strerror}. Fix its permissions or set config_file.")
    except tomllib.TOMLDecodeError as exc:
        raise PixelsError(f"The pixels config file {path} is not valid TOML ({exc}): fix it or point config_file elsewhere.")
    for section in ("incus", "defaults"):
        if section in data and not isinstance(data[section], dict):
            raise PixelsError(f"In {path}, '{section}' must be a table ([{section}]), not {type(data[section]).__name__}.")
    return data


def _coerce(name, value, kind, origin):
    if value is None:
        return None
    if kind in ("str", "path"):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise PixelsError(f"{name} from {origin} must be a string, not {value!r}.")
        value = str(value).strip()
        if not value:
            return None
        return os.path.expanduser(value) if kind == "path" else value
    if kind == "int":
        if isinstance(value, bool):
            raise PixelsError(f"{name} from {origin} must be a whole number, not {value!r}.")
        try:
            return int(str(value).strip())
        except ValueError:
            raise PixelsError(f"{name} from {origin} must be a whole number, not {value!r}.")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise PixelsError(f"{name} from {origin} must be true or false, not {value!r}.")
    raise ValueError(kind)


def resolve(params, names, environ=None, config_file=None, origin="the task option"):
    """Values for ``names`` with the pixels CLI's fallback order.

    ``params`` holds the task options (None where unset). Returns a dict of
    values; ``config_file`` overrides the default path of config.toml; ``origin``
    names where ``params`` came from in error messages.
    """
    environ = os.environ if environ is None else environ
    path = config_file or environ.get("PIXELS_CONFIG") or default_config_file(environ)
    config = load_config_file(path, explicit=bool(config_file))
    values = {}
    for name in names:
        setting = SETTINGS[name]
        if params.get(name) is not None:
            values[name] = _coerce(name, params[name], setting.kind, origin)
            continue
        if environ.get(setting.env, "").strip():
            values[name] = _coerce(name, environ[setting.env], setting.kind, setting.env)
            continue
        section = config.get(setting.section) or {}
        if section.get(setting.key) is not None:
            origin = f"{path} [{setting.section}] {setting.key}"
            values[name] = _coerce(name, section[setting.key], setting.kind, origin)
            continue
        values[name] = setting.default
    return values
