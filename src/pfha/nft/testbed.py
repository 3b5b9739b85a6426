"""A firewall in network namespaces, wired as in the tutorial, for root tests and benchmarks.

::

    ext ns (the internet)                fw ns                          lan ns
    eth0 203.0.113.1/24     ──  xl0 203.0.113.2/24 (+ .10 .11 .12)
         198.51.100.*/32                 xl1 192.168.1.250/24 (+ .1)  ──  eth0 192.168.1.100/24
                                                                            (.80 .81 .82 .119)
                                         rl0 10.10.10.250/24          ──  sync ns: rl0 10.10.10.251/24

The CARP addresses (carp0: 203.0.113.10-12, carp1: 192.168.1.1) sit on xl0/xl1 as a CARP
master's would; the interface view given to the parser names them as FreeBSD does.

``serve`` and ``probe`` are tiny network tools run inside the namespaces (``python -m
pfha.nft.testbed serve|probe ...``): a server answers every connection or datagram with the
address it saw the peer come from, so tests can check what translation did.

Touches the OS (namespaces, processes); used only by tests, benchmarks and demos.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pfha.conf.interfaces import InterfaceView
from pfha.lab.netns import Lab, Namespace

EXT_HOSTS = ("198.51.100.7", "198.51.100.53", "198.51.100.54", "198.51.100.80", "198.51.100.200")
LAN_HOSTS = ("192.168.1.100", "192.168.1.80", "192.168.1.81", "192.168.1.82", "192.168.1.119")
VIEW_SPECS = (
    "xl0=203.0.113.2/24",
    "xl1=192.168.1.250/24",
    "rl0=10.10.10.250/8",
    "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24",
    "carp1=192.168.1.1/24",
    "carp2=10.10.10.1/8",
    "lo0=127.0.0.1/8",
)
SRC = str(Path(__file__).resolve().parents[2])


def tutorial_view() -> InterfaceView:
    """The interfaces of the tutorial's primary firewall, as pfctl would see them."""
    return InterfaceView.from_specs(VIEW_SPECS)


@dataclass
class Testbed:
    """The namespaces of one firewall lab; :meth:`close` removes everything."""

    lab: Lab
    ext: Namespace
    fw: Namespace
    lan: Namespace
    sync: Namespace
    processes: list[subprocess.Popen] = field(default_factory=list)

    def python(self, ns: Namespace, *args: str, **kwargs) -> subprocess.Popen:
        proc = ns.popen(sys.executable, "-m", "pfha.nft.testbed", *args, env={**os.environ, "PYTHONPATH": SRC}, **kwargs)
        self.processes.append(proc)
        return proc

    def pfha(self, ns: Namespace, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(ns.argv([sys.executable, "-m", "pfha.cli.main", *args]), env={**os.environ, "PYTHONPATH": SRC},
                              capture_output=True, text=True, input=input, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"pfha {' '.join(args)} failed: {proc.stderr}")
        return proc

    def pfctl(self, ns: Namespace, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(ns.argv([sys.executable, "-m", "pfha.nft.pfctl_cli", *args]), env={**os.environ, "PYTHONPATH": SRC},
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"pfctl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def serve(self, ns: Namespace, endpoints: list[str]) -> subprocess.Popen:
        """Start a server for ``proto:addr:port`` endpoints and wait until it listens."""
        proc = self.python(ns, "serve", *endpoints, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"server did not start: {line!r}")
        return proc

    def probe(self, ns: Namespace, proto: str, src: str, dst: str, port: int, timeout: float = 1.5, sport: int = 0) -> str:
        """``OK <what the server saw>``, ``TIMEOUT``, ``REFUSED``..."""
        out = subprocess.run(ns.argv([sys.executable, "-m", "pfha.nft.testbed", "probe", proto, src, dst, str(port), str(timeout), str(sport)]),
                             env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=timeout + 20)
        return out.stdout.strip() or out.stderr.strip()

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.lab.close()


def build(prefix: str = "nft") -> Testbed:
    lab = Lab(prefix=prefix)
    try:
        ext, fw, lan, sync = lab.ns("ext"), lab.ns("fw"), lab.ns("lan"), lab.ns("sync")
        lab.link(fw, "xl0", ext, "eth0")
        lab.link(fw, "xl1", lan, "eth0")
        lab.link(fw, "rl0", sync, "rl0")
        for address in ("203.0.113.2/24", "203.0.113.10/32", "203.0.113.11/32", "203.0.113.12/32"):
            fw.exec("ip", "addr", "add", address, "dev", "xl0")
        for address in ("192.168.1.250/24", "192.168.1.1/32"):
            fw.exec("ip", "addr", "add", address, "dev", "xl1")
        fw.exec("ip", "addr", "add", "10.10.10.250/24", "dev", "rl0")
        fw.exec("ip", "route", "add", "default", "via", "203.0.113.1")
        fw.sysctl("net.ipv4.ip_forward", 1)
        fw.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        ext.exec("ip", "addr", "add", "203.0.113.1/24", "dev", "eth0")
        for host in EXT_HOSTS:
            ext.exec("ip", "addr", "add", f"{host}/32", "dev", "eth0")
        ext.exec("ip", "addr", "add", "10.0.0.5/32", "dev", "eth0")  # a spoofer (private source)
        ext.exec("ip", "addr", "add", "192.168.1.5/32", "dev", "eth0")  # a spoofer (the LAN's source)
        ext.exec("ip", "route", "add", "192.168.1.0/24", "via", "203.0.113.2")  # routed, not NATed: pf must still block
        lan.exec("ip", "addr", "add", "192.168.1.100/24", "dev", "eth0")
        for host in LAN_HOSTS[1:]:
            lan.exec("ip", "addr", "add", f"{host}/24", "dev", "eth0")
        lan.exec("ip", "route", "add", "default", "via", "192.168.1.1")
        sync.exec("ip", "addr", "add", "10.10.10.251/24", "dev", "rl0")
        for ns in (ext, lan, sync):
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        return Testbed(lab, ext, fw, lan, sync)
    except BaseException:
        lab.close()
        raise


# ------------------------------------------------------------------------------- tools
def serve(endpoints: list[str]) -> None:
    """Answer each TCP connection / UDP datagram with "<local> from <peer>" and close."""
    selector = selectors.DefaultSelector()
    for spec in endpoints:
        proto, address, port = spec.split(":")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, 19, 1)  # IP_FREEBIND: VIPs may come later
        sock.bind((address, int(port)))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, spec)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            try:
                if sock.type == socket.SOCK_STREAM:
                    conn, peer = sock.accept()
                    threading.Thread(target=_answer, args=(conn, peer), daemon=True).start()
                else:
                    data, peer = sock.recvfrom(65536)
                    local = sock.getsockname()
                    sock.sendto(f"{local[0]}:{local[1]} from {peer[0]}:{peer[1]}\n".encode(), peer)
            except OSError:
                continue


def _answer(conn: socket.socket, peer: tuple) -> None:
    """Say what we saw, then echo lines until the peer says bye (long-lived connections)."""
    local = conn.getsockname()
    conn.setblocking(True)
    conn.settimeout(30)
    try:
        conn.sendall(f"{local[0]}:{local[1]} from {peer[0]}:{peer[1]}\n".encode())
        while True:
            data = conn.recv(65536)
            if not data or data == b"bye\n":
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def probe(proto: str, src: str, dst: str, port: int, timeout: float, sport: int = 0) -> str:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.settimeout(timeout)
    sock.bind((src, sport))
    try:
        if kind == socket.SOCK_STREAM:
            sock.connect((dst, port))
            data = sock.recv(4096)
            sock.sendall(b"bye\n")
        else:
            sock.sendto(b"probe", (dst, port))
            data, _ = sock.recvfrom(4096)
        return "OK " + data.decode().strip()
    except socket.timeout:
        return "TIMEOUT"
    except ConnectionRefusedError:
        return "REFUSED"
    except ConnectionResetError:
        return "RESET"
    except OSError as error:
        return f"ERROR {error.strerror}"
    finally:
        sock.close()


def stream(src: str, dst: str, port: int, seconds: float, interval: float) -> None:
    """A long-lived TCP connection exchanging a line every ``interval``; prints what broke."""
    sock = socket.create_connection((dst, port), timeout=3, source_address=(src, 0))
    sock.recv(4096)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            payload = f"{sent}\n".encode()
            sock.sendall(payload)
            got = b""
            while not got.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("closed by peer")
                got += chunk
            if got != payload:
                raise RuntimeError(f"echo mismatch {got!r}")
            sent += 1
            time.sleep(interval)
        print(f"OK {sent}", flush=True)
    except (OSError, RuntimeError) as error:
        print(f"BROKEN after {sent}: {error}", flush=True)
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pfha.nft.testbed")
    sub = parser.add_subparsers(dest="tool", required=True)
    s = sub.add_parser("serve")
    s.add_argument("endpoints", nargs="+")
    p = sub.add_parser("probe")
    p.add_argument("proto")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("port", type=int)
    p.add_argument("timeout", type=float)
    p.add_argument("sport", type=int, nargs="?", default=0)
    st = sub.add_parser("stream")
    st.add_argument("src")
    st.add_argument("dst")
    st.add_argument("port", type=int)
    st.add_argument("seconds", type=float)
    st.add_argument("interval", type=float)
    args = parser.parse_args(argv)
    if args.tool == "serve":
        serve(args.endpoints)
    elif args.tool == "probe":
        print(probe(args.proto, args.src, args.dst, args.port, args.timeout, args.sport))
    else:
        stream(args.src, args.dst, args.port, args.seconds, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
