"""TLS websockets to a remote Incus: session tickets read before websockets shares the socket,
and a failed opening handshake that cannot leave a reading thread blocked (local TLS servers)."""

import socket
import ssl
import struct
import threading
import time
from contextlib import contextmanager

import pytest
from websockets.sync import client as websockets_client

from tls_fixtures import make_cert, remote_backend

from ansible_collections.homelab.pixels.plugins.module_utils import incus_io
from ansible_collections.homelab.pixels.plugins.module_utils.incus_io import (
    unblocking_connection,
)


@contextmanager
def tls_server(tmp_path, after_handshake, tickets=2):
    """A TLS 1.3 listener on loopback; ``after_handshake(tls_socket)`` runs for each client."""
    crt, key = make_cert(tmp_path, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    context.num_tickets = tickets
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    kept = []  # open until the end: a closed socket would end the client's wait

    def handle(conn):
        try:
            kept.append(after_handshake(context.wrap_socket(conn, server_side=True)))
        except (OSError, ssl.SSLError):
            pass

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            kept.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], crt
    finally:
        stop.set()
        thread.join()
        for kept_socket in kept:
            if kept_socket is not None:
                kept_socket.close()
        listener.close()


def test_session_tickets_are_read_before_the_socket_is_handed_on(tmp_path):
    with tls_server(tmp_path, lambda tls: tls) as (port, crt):
        remote = remote_backend(f"https://127.0.0.1:{port}", server_cert=crt)
        tls_socket = remote._open_tls()
        with tls_socket:
            assert tls_socket.version() == "TLSv1.3"
            assert tls_socket.session.has_ticket
            assert tls_socket.gettimeout() is None  # blocking again, as websockets expects
        assert remote._tickets is True


def test_a_server_without_tickets_is_waited_for_once(tmp_path, monkeypatch):
    monkeypatch.setattr(incus_io, "TICKET_WAIT", 0.3)
    with tls_server(tmp_path, lambda tls: tls, tickets=0) as (port, crt):
        remote = remote_backend(f"https://127.0.0.1:{port}", server_cert=crt)
        started = time.monotonic()
        remote._open_tls().close()
        assert time.monotonic() - started >= 0.3
        assert remote._tickets is False
        started = time.monotonic()
        remote._open_tls().close()
        assert time.monotonic() - started < 0.3  # no second wait


def test_data_before_the_request_is_refused(tmp_path):
    with tls_server(tmp_path, lambda tls: tls.sendall(b"hello") or tls, tickets=0) as (port, crt):
        remote = remote_backend(f"https://127.0.0.1:{port}", server_cert=crt)
        with pytest.raises(incus_io.PixelsError, match="sent data before"):
            remote._open_tls()


def partial_record(tls):
    """Half a TLS record, written under the TLS layer: the client's read waits for the rest."""
    raw = socket.socket(fileno=tls.detach())
    raw.sendall(struct.pack(">BHH", 23, 0x0303, 100) + b"x" * 10)
    return raw


def test_a_failed_handshake_does_not_leave_a_blocked_reader(tmp_path):
    with tls_server(tmp_path, partial_record, tickets=0) as (port, crt):
        remote = remote_backend(f"https://127.0.0.1:{port}", server_cert=crt)
        remote._tickets = False
        tls_socket = remote._open_tls()
        outcome = []

        def connect():
            try:
                websockets_client.connect(f"ws://127.0.0.1:{port}/", sock=tls_socket, open_timeout=0.5,
                                          create_connection=unblocking_connection())
            except Exception as exc:  # pylint: disable=broad-except
                outcome.append(exc)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(4)
        assert not thread.is_alive(), "the failed handshake still waits for its reading thread"
        assert outcome and isinstance(outcome[0], TimeoutError)
