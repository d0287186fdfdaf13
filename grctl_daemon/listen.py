"""The TCP listener's parts: binding its address, its TLS context, and what a failed handshake
means to the operator (the server logs it in one line)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from grctl.home import Address

HELLO_TIMEOUT_S = 10.0


class ListenError(Exception):
    """The TCP listener cannot start: its address is taken, or its certificate does not load."""


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """The TCP listener's TLS: the stdlib's server defaults with this certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ListenError(
            f"cannot load the TLS certificate {cert} with the key {key} ({exc.reason or exc}); "
            "give PEM files, the key the one the certificate was made for"
        ) from None
    except OSError as exc:
        raise ListenError(
            f"cannot read the TLS certificate {cert} or key {key}: {exc.strerror or exc}"
        ) from None
    return context


def bind(address: Address) -> socket.socket:
    """A listening TCP socket on ``address`` (an empty host: every interface)."""
    try:
        if address.host:
            family = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0][0]
            listener = socket.create_server(
                (address.host, address.port), family=family, backlog=1024
            )
        elif socket.has_dualstack_ipv6():
            listener = socket.create_server(
                ("", address.port), family=socket.AF_INET6, backlog=1024, dualstack_ipv6=True
            )
        else:
            listener = socket.create_server(("", address.port), backlog=1024)
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {address}: {exc.strerror or exc}; give --listen an address of "
            "this machine and a port nothing else holds"
        ) from None
    listener.setblocking(False)
    return listener


def remote(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def handshake_problem(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if "ALERT" in reason:  # the client's TLS refused ours, most likely our certificate
            return f"{reason}; does the client's --tls-ca name the CA that signed our certificate?"
        return (
            f"{reason}; a client that does not speak TLS must connect with --tls-ca or GRCTL_TLS_CA"
        )
    if isinstance(exc, TimeoutError):
        return f"no handshake within {HELLO_TIMEOUT_S:g}s"
    if isinstance(exc, ConnectionError):
        return (
            "the client closed the connection during the handshake (does its --tls-ca name "
            "the CA that signed our certificate?)"
        )
    return f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
