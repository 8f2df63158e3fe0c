"""DNS messages as the freshness measurement needs them: a hand-built A
question (recursion not desired: an authoritative question) and the A
addresses of its answer. Pure encoding and decoding, plus one UDP asker;
never resolves through the system."""
import socket
import struct
import time

TYPE_A = 1
CLASS_IN = 1


def query(qid, name, qtype=TYPE_A):
    header = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return header + qname + struct.pack("!HH", qtype, CLASS_IN)


def skip_name(msg, pos):
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def a_records(msg, qid):
    """The A addresses of the answer section, or None if msg is not a
    response to question qid."""
    if len(msg) < 12:
        return None
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        return None
    pos = 12
    for _ in range(qd):
        pos = skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = skip_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == TYPE_A and rdlen == 4:
            out.append(socket.inet_ntoa(msg[pos:pos + 4]))
        pos += rdlen
    return out


class Asker:
    """A question at a time to one server over UDP, each with a fresh id;
    an answer is awaited for at most `timeout` seconds."""

    def __init__(self, host, port, timeout=0.2):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((host, port))
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.qid = 0

    def a(self, name):
        """The A addresses the server answers for name, None without an answer."""
        self.qid = (self.qid + 1) & 0xFFFF
        self.sock.send(query(self.qid, name))
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            try:
                got = a_records(self.sock.recv(4096), self.qid)
            except socket.timeout:
                return None
            if got is not None:
                return got
        return None

    def close(self):
        self.sock.close()
