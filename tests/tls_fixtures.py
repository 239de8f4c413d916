"""Certificates and TLS listeners on loopback for the tests (no Incus involved)."""

import socket
import ssl
import subprocess
import threading
from contextlib import contextmanager


def make_cert(directory, name):
    """A self-signed EC certificate for 127.0.0.1; (cert path, key path)."""
    crt, key = str(directory / f"{name}.crt"), str(directory / f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


def fingerprint(crt):
    out = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=", 1)[1].strip().replace(":", "").lower()


@contextmanager
def tls_stand_in(certs):
    """A TLS listener with a self-signed certificate (not Incus, not trusted) answering 404."""
    server_crt, server_key = make_cert(certs, "server")
    other_crt = make_cert(certs, "other")[0]
    client_crt, client_key = make_cert(certs, "client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_crt, server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield {"url": f"https://127.0.0.1:{listener.getsockname()[1]}", "server_cert": server_crt,
               "other_cert": other_crt, "client_cert": client_crt, "client_key": client_key, "dir": certs}
    finally:
        stop.set()
        thread.join()
        listener.close()


def remote_backend(url, **tls):
    """IncusIO set up as the backend of a remote, without talking to Incus."""
    # pylint: disable=import-outside-toplevel,protected-access
    from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import IncusIO

    backend = IncusIO()
    backend.endpoint, backend.project, backend.timeout = url, "agents", 5
    backend._socket_path, backend._ssl_context, backend._tickets = None, None, None
    backend._tls = dict({"client_cert": None, "client_key": None, "server_cert": None,
                         "validate_certs": True}, **tls)
    return backend
