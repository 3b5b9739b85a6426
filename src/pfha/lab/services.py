"""Small TCP/UDP services and probes that run inside lab namespaces.

``serve`` runs every service of one lab host in one asyncio process; ``probe`` checks many
targets at once and prints one JSON line per target; ``fetch`` runs a paced bulk transfer and
reports how it ended. They are started with ``ip netns exec NS python -m pfha.lab.services ...``
so that each socket lives in the namespace it belongs to.

The TCP protocol is deliberately tiny: the server greets with ``pfha-lab HOST PORT from ADDRESS`` on connect
plus the client address it saw (so a probe learns *which* server answered, e.g. which member
of an rdr pool, and what source address NAT gave it), then reads one
optional command line: ``BULK NBYTES RATE`` streams NBYTES at RATE bytes/s. UDP port 53 answers
real DNS queries with one A record; other UDP services echo.

This module must never touch interfaces, routes or rulesets: it only opens sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass

from pfha.checksum import internet_checksum

GREETING = "pfha-lab"
CHUNK = 16384


# --- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    proto: str
    address: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        """``tcp:192.168.1.80:25``, ``udp:198.51.100.53:53`` or ``icmp:203.0.113.10`` (echo)."""
        proto, address, *port = text.split(":")
        if proto not in ("tcp", "udp", "icmp") or len(port) != (proto != "icmp"):
            raise ValueError(f"bad target {text!r}: tcp:ADDR:PORT, udp:ADDR:PORT or icmp:ADDR")
        return cls(proto, address, int(port[0]) if port else 0)

    def __str__(self) -> str:
        return f"{self.proto}:{self.address}" if self.proto == "icmp" else f"{self.proto}:{self.address}:{self.port}"


@dataclass
class ProbeResult:
    target: str
    ok: bool
    answer: str = ""  # the greeting (who answered) or the reply's summary
    error: str = ""
    seconds: float = 0.0


# --- DNS (just enough to answer and to check an answer) -----------------------------------


def dns_query(name: str = "lab.example", ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes, address: str) -> bytes | None:
    """A response to ``query`` with one A record; None if it is not a plain one-question query."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    end = 12
    while end < len(query) and query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHLH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return header + question + answer


def dns_reply_ok(reply: bytes, ident: int = 0x1234) -> bool:
    return len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == ident and bool(reply[2] & 0x80)


# --- servers -------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, kind: str, answer_ip: str) -> None:
        self.kind, self.answer_ip = kind, answer_ip

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        reply = dns_answer(data, self.answer_ip) if self.kind == "dns" else data
        if reply:
            self.transport.sendto(reply, addr)


async def _stream(writer: asyncio.StreamWriter, nbytes: int, rate: float) -> None:
    """Send ``nbytes`` at about ``rate`` bytes/s (rate 0: as fast as possible)."""
    start, sent = time.monotonic(), 0
    block = b"x" * CHUNK
    while sent < nbytes:
        piece = block[: min(CHUNK, nbytes - sent)]
        writer.write(piece)
        await writer.drain()
        sent += len(piece)
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _tcp_handler(host: str, port: int, kind: str, answer_ip: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if kind == "dns":
                await _dns_over_tcp(reader, writer, answer_ip)
                return
            peer = writer.get_extra_info("peername") or ("?", 0)
            # Who answered, and the source address it saw: NAT shows here (203.0.113.10, not .2).
            writer.write(f"{GREETING} {host} {port} from {peer[0]}\n".encode())
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), 30)
            except asyncio.TimeoutError:
                return
            words = line.decode(errors="replace").split()
            if len(words) == 3 and words[0] == "BULK":
                await _stream(writer, int(words[1]), float(words[2]))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handle


async def _dns_over_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer_ip: str) -> None:
    size = struct.unpack("!H", await reader.readexactly(2))[0]
    reply = dns_answer(await reader.readexactly(size), answer_ip)
    if reply:
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()


async def serve(host: str, specs: list[str], answer_ip: str = "198.51.100.100") -> None:
    """Serve ``proto:port[:kind]`` specs until killed."""
    loop = asyncio.get_running_loop()
    for spec in specs:
        proto, port_text, *rest = spec.split(":")
        kind, port = (rest[0] if rest else "banner"), int(port_text)
        if proto == "tcp":
            await asyncio.start_server(_tcp_handler(host, port, kind, answer_ip), "0.0.0.0", port, reuse_address=True)
        else:
            await loop.create_datagram_endpoint(lambda k=kind: _Udp(k, answer_ip), local_addr=("0.0.0.0", port))
    print(f"{host}: serving {' '.join(specs)}", flush=True)
    await asyncio.Event().wait()


# --- probes --------------------------------------------------------------------------------


async def _probe_tcp(target: Target, timeout: float) -> ProbeResult:
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target.address, target.port), timeout)
        try:
            if target.port == 53:
                query = dns_query()
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
                reply = await asyncio.wait_for(reader.readexactly(size), timeout)
                ok = dns_reply_ok(reply)
                answer = "dns answer" if ok else "bad dns reply"
            else:
                line = await asyncio.wait_for(reader.readline(), timeout)
                answer = line.decode(errors="replace").strip()
                ok = answer.startswith(GREETING)
            return ProbeResult(str(target), ok, answer=answer, seconds=time.monotonic() - start)
        finally:
            writer.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as error:
        return ProbeResult(str(target), False, error=type(error).__name__ + (f": {error}" if str(error) else ""), seconds=time.monotonic() - start)


async def _probe_udp(target: Target, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    received: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
            if not received.done():
                received.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not received.done():
                received.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(target.address, target.port))
    payload = dns_query() if target.port == 53 else b"pfha-lab ping"
    try:
        for _ in range(3):  # UDP may be lost: retry within the timeout
            transport.sendto(payload)
            try:
                reply = await asyncio.wait_for(asyncio.shield(received), timeout / 3)
                ok = dns_reply_ok(reply) if target.port == 53 else reply == payload
                return ProbeResult(str(target), ok, answer=f"{len(reply)} bytes", seconds=time.monotonic() - start)
            except asyncio.TimeoutError:
                continue
        return ProbeResult(str(target), False, error="timeout", seconds=time.monotonic() - start)
    except OSError as error:
        return ProbeResult(str(target), False, error=f"{type(error).__name__}: {error}", seconds=time.monotonic() - start)
    finally:
        transport.close()


async def _probe_icmp(target: Target, timeout: float, ident: int) -> ProbeResult:
    """One ICMP echo request over a raw socket; ok when the matching echo reply comes back."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"pfha-lab"
    packet = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        sock.connect((target.address, 0))
        deadline = start + timeout
        try:
            for _ in range(3):
                await loop.sock_sendall(sock, packet)
                while (left := min(deadline, time.monotonic() + timeout / 3) - time.monotonic()) > 0:
                    try:
                        reply = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
                    except asyncio.TimeoutError:
                        break
                    header = (reply[0] & 0x0F) * 4
                    kind, _code, _sum, got_id = struct.unpack("!BBHH", reply[header:header + 6])
                    if kind == 0 and got_id == ident:
                        return ProbeResult(str(target), True, answer="echo reply", seconds=time.monotonic() - start)
        except OSError as error:
            return ProbeResult(str(target), False, error=f"{type(error).__name__}: {error}", seconds=time.monotonic() - start)
    return ProbeResult(str(target), False, error="timeout", seconds=time.monotonic() - start)


async def probe_all(targets: list[Target], timeout: float) -> list[ProbeResult]:
    def one(index: int, target: Target):
        if target.proto == "tcp":
            return _probe_tcp(target, timeout)
        if target.proto == "udp":
            return _probe_udp(target, timeout)
        return _probe_icmp(target, timeout, (os.getpid() + index) & 0xFFFF)

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(targets))))


# --- bulk transfer -------------------------------------------------------------------------


@dataclass
class FetchResult:
    target: str
    ok: bool
    received: int
    wanted: int
    seconds: float
    server: str = ""
    error: str = ""
    longest_stall: float = 0.0  # the longest gap between two reads: how long a failover took


async def fetch(target: Target, nbytes: int, rate: float, timeout: float, progress: bool = False) -> FetchResult:
    """Download ``nbytes`` from a banner service; ``ok`` only if every byte arrived, no reset."""
    start = time.monotonic()
    received, stall, server = 0, 0.0, ""
    last = start
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target.address, target.port), timeout)
        server = (await asyncio.wait_for(reader.readline(), timeout)).decode(errors="replace").strip()
        writer.write(f"BULK {nbytes} {rate}\n".encode())
        await writer.drain()
        last = time.monotonic()
        next_report = last + 1
        while received < nbytes:
            data = await asyncio.wait_for(reader.read(CHUNK * 4), timeout)
            if not data:
                break
            now = time.monotonic()
            stall, last = max(stall, now - last), now
            received += len(data)
            if progress and now >= next_report:
                print(json.dumps({"progress": received, "of": nbytes, "t": round(now - start, 2)}), flush=True)
                next_report = now + 1
        writer.close()
        error = "" if received == nbytes else "connection closed early"
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
        error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        stall = max(stall, time.monotonic() - last)  # the silence that ended it counts too
    return FetchResult(str(target), received == nbytes, received, nbytes, time.monotonic() - start, server, error, stall)


# --- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pfha.lab.services")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", required=True)
    s.add_argument("--answer", default="198.51.100.100", help="address DNS answers carry")
    s.add_argument("specs", nargs="+", help="proto:port[:kind]")
    p = sub.add_parser("probe")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("targets", nargs="+", help="tcp:ADDR:PORT, udp:ADDR:PORT or icmp:ADDR")
    f = sub.add_parser("fetch")
    f.add_argument("target")
    f.add_argument("--bytes", type=int, default=10_000_000)
    f.add_argument("--rate", type=float, default=0.0, help="bytes/s the server paces to (0: full speed)")
    f.add_argument("--timeout", type=float, default=30.0, help="give up after this long without data")
    f.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(serve(args.host, args.specs, args.answer))
        return 0
    if args.cmd == "probe":
        results = asyncio.run(probe_all([Target.parse(t) for t in args.targets], args.timeout))
        for result in results:
            print(json.dumps(asdict(result)), flush=True)
        return 0
    result = asyncio.run(fetch(Target.parse(args.target), args.bytes, args.rate, args.timeout, args.progress))
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
