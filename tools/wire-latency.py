#!/usr/bin/env python3
"""wire-latency.py - request latency as the wire saw it, from a pcap of loopback HTTP traffic.

    tools/wire-latency.py CAPTURE.pcap SERVER_PORT [SKIP_SECONDS]

Every request on a connection is taken to be R bytes and every answer A bytes (R and A: the
most common data segment length of each direction, i.e. one request or answer per segment;
fixed-size requests of one URL, as wrk, wrk2 and netcore load send). Request k of a connection
leaves with the segment that carries its first byte (client stream offset k*R) and is answered
when the segment carrying the last byte of answer k (server stream offset (k+1)*A - 1) passes,
so pipelined requests and answers coalesced into one segment are paired right. Latency = answer
time - request time, as stamped by the kernel's capture tap (`tcpdump -i lo`, which sees every
segment once on loopback). Requests leaving in the first SKIP_SECONDS of the capture (a
client's warm-up or calibration) are left out, as are those with no answer in the capture.

Prints one line: "wire COUNT p50_us p90_us p99_us req=RB answer=AB". Reads classic pcap (tcpdump -w), link type
Ethernet (loopback's) or raw IP, IPv4 or IPv6; anything else is an error.
"""
import struct
import sys
from collections import Counter, defaultdict


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            sys.exit(f"{path}: not a pcap file (too short)")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            end = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            end = ">"
        else:
            sys.exit(f"{path}: not a classic pcap file (magic {magic.hex()})")
        nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
        link = struct.unpack(end + "I", head[20:24])[0]
        if link not in (1, 101, 12):
            sys.exit(f"{path}: link type {link} is not Ethernet or raw IP")
        rec = struct.Struct(end + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = rec.unpack(h)
            data = f.read(incl)
            t = sec + frac / (1e9 if nano else 1e6)
            yield t, data[14:] if link == 1 else data


def segments(path):
    """(time, src port, dst port, sequence number, payload length) of every TCP segment."""
    for t, ip in packets(path):
        if not ip:
            continue
        v = ip[0] >> 4
        if v == 4:
            ihl = (ip[0] & 15) * 4
            if ip[9] != 6:
                continue
            total = struct.unpack("!H", ip[2:4])[0]
            tcp, payload_total = ip[ihl:], total - ihl
        elif v == 6:
            if ip[6] != 6:
                continue
            tcp, payload_total = ip[40:], struct.unpack("!H", ip[4:6])[0]
        else:
            continue
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        off = (tcp[12] >> 4) * 4
        yield t, sport, dport, seq, payload_total - off


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1].strip())
    path, port = sys.argv[1], int(sys.argv[2])
    skip = float(sys.argv[3]) if len(sys.argv) == 4 else 0.0
    start = None
    # connection (client port) -> direction (True: client->server) -> [(time, seq, len)]
    flows = defaultdict(lambda: {True: [], False: []})
    lens = {True: Counter(), False: Counter()}
    for t, sport, dport, seq, n in segments(path):
        if start is None:
            start = t
        if n <= 0 or port not in (sport, dport):
            continue
        up = dport == port
        flows[sport if up else dport][up].append((t, seq, n))
        lens[up][n] += 1
    if not lens[True] or not lens[False]:
        print("wire 0 nan nan nan")
        return
    req, ans = lens[True].most_common(1)[0][0], lens[False].most_common(1)[0][0]
    lat = []
    for f in flows.values():
        up, down = f[True], f[False]
        if not up or not down:
            continue
        # Offsets relative to each direction's first data byte (sequence numbers wrap at 2^32).
        ub, db = up[0][1], down[0][1]
        ui = di = 0
        k = 0
        while True:
            first = k * req  # first byte of request k
            while ui < len(up) and ((up[ui][1] - ub) % 2**32) + up[ui][2] <= first:
                ui += 1
            if ui == len(up):
                break
            last = (k + 1) * ans - 1  # last byte of answer k
            while di < len(down) and ((down[di][1] - db) % 2**32) + down[di][2] <= last:
                di += 1
            if di == len(down):
                break
            sent, got = up[ui][0], down[di][0]
            if sent - start >= skip:
                lat.append((got - sent) * 1e6)
            k += 1
    if not lat:
        print("wire 0 nan nan nan")
        return
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

    print(f"wire {len(lat)} {pct(50):.1f} {pct(90):.1f} {pct(99):.1f} req={req}B answer={ans}B")


if __name__ == "__main__":
    main()
