"""The image's half of the port forwarder: Unix sockets on one side, the image's loopback on the other (a script, run by path).

``python3 -I -S port_relay.py USERNS_FD NETNS_FD PORTS_DIR PORT...``

Why a process of its own: to dial ``127.0.0.1:PORT`` in the image's private network a
socket must be made inside its network namespace, and a user other than root may
only enter that namespace from inside the run's user namespace, which a threaded
process (ours) cannot join. This script joins both (``setns``, keeping our host
credentials) before it starts any thread, then for each PORT listens on the Unix socket
``PORTS_DIR/PORT.sock`` (a path-named Unix socket is reached through the filesystem,
whatever the network namespace). Each connection: dial the port in the image, answer
one byte ``1`` when connected (anything else: the port does not answer yet), then copy
bytes both ways. It imports nothing of ociassemble, and exits when its stdin closes (our
end of the pipe: we stopped or died).
"""

import ctypes
import os
import select
import socket
import sys
import threading

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
#: Bytes copied per recv: large enough for a JSON scoring request in one go.
BUF = 1 << 16
#: The one byte saying "connected to the port in the image".
CONNECTED = b"1"


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(BUF)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(conn: socket.socket, port: int) -> None:
    try:
        up = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        conn.close()
        return
    up.settimeout(None)
    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small writes both ways: no Nagle stalls
    try:
        conn.sendall(CONNECTED)
    except OSError:
        conn.close()
        up.close()
        return
    back = threading.Thread(target=pump, args=(up, conn), daemon=True)
    back.start()
    pump(conn, up)
    back.join()
    conn.close()
    up.close()


def main(argv: list[str]) -> None:
    userns, netns, ports_dir = int(argv[1]), int(argv[2]), argv[3]
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() != 0 and libc.setns(userns, CLONE_NEWUSER) != 0:
        sys.exit(f"ociassemble run: cannot enter the image's user namespace: {os.strerror(ctypes.get_errno())}")
    if libc.setns(netns, CLONE_NEWNET) != 0:
        sys.exit(f"ociassemble run: cannot enter the image's network: {os.strerror(ctypes.get_errno())}")
    os.close(userns)
    os.close(netns)
    os.chdir(ports_dir)  # relative socket names: a Unix socket's path is limited to 107 bytes
    listeners = {}
    for port in map(int, argv[4:]):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(f"{port}.sock")
        s.listen(128)
        listeners[s] = port
    while True:
        ready, _, _ = select.select([sys.stdin, *listeners], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            return
        for s in ready:
            if s in listeners:
                try:
                    conn, _ = s.accept()
                except OSError:
                    continue
                threading.Thread(target=serve, args=(conn, listeners[s]), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv)
