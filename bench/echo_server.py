"""A bare gRPC echo server under the facility's mutual TLS: the baseline bench/ divides by.

One generic method, `/bench.Echo/Echo`, with identity (de)serializers: the request bytes come
back unchanged, so the only costs are HTTP/2, TLS and gRPC's own Python layers. Two flavours:

- `aio`: a `grpc.aio` server on one event loop (what the broker is built on);
- `sync`: the threaded `grpc.server(ThreadPoolExecutor)`.

Run it as its own process: it binds 127.0.0.1 on an OS-picked port, prints `PORT <n>` on
stdout, and serves until SIGTERM/SIGINT, until its standard input closes (so it never outlives
the bench that started it), or until `--max-seconds` have passed, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from attestation.keys import load_private_key

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


def _credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    """The same credentials the broker builds: server key and chain, client auth required."""
    key_pem = load_private_key(key).to_pem()
    return grpc.ssl_server_credentials(
        [(key_pem, cert.read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,
    )


def _echo_sync(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


async def _echo_async(request: bytes, context: Any) -> bytes:
    return request


def _handler(behaviour: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


def _stop_on_eof(stop: threading.Event) -> None:
    """Block on stdin in a daemon thread; EOF (the parent went away) means stop.

    Raw os.read, not sys.stdin: a daemon thread inside a buffered read at interpreter exit
    holds the buffer's lock, and Python aborts the process over it.
    """
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    stop.set()


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def serve_sync(creds: grpc.ServerCredentials, workers: int, stop: threading.Event) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_handler(_echo_sync),))
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    _announce(port)
    try:
        stop.wait()
    finally:
        server.stop(1.0).wait(5.0)


async def serve_aio(creds: grpc.ServerCredentials, stop: threading.Event) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(_echo_async),))
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    _announce(port)
    try:
        await asyncio.to_thread(stop.wait)
    finally:
        await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=("aio", "sync"), required=True, help="server flavour")
    parser.add_argument("--ca", type=Path, required=True, help="CA certificate (PEM)")
    parser.add_argument("--cert", type=Path, required=True, help="server certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="server private key (PEM)")
    parser.add_argument(
        "--workers", type=int, default=16, help="thread pool size of the sync server"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="stop by itself after this long"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=_stop_on_eof, args=(stop,), daemon=True).start()
    deadline = threading.Timer(args.max_seconds, stop.set)
    deadline.daemon = True
    deadline.start()
    creds = _credentials(args.ca, args.cert, args.key)
    try:
        if args.mode == "sync":
            serve_sync(creds, args.workers, stop)
        else:
            asyncio.run(serve_aio(creds, stop))
    finally:
        deadline.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
