import socket
import struct
import threading
import unittest

from benchtool import dnswire


def response(qid, name, addresses, flags=0x8400):
    """An authoritative response to an A question with a compressed owner
    name (pointer to the question) for every answer."""
    question = dnswire.query(qid, name)[12:]
    header = struct.pack("!HHHHHH", qid, flags, 1, len(addresses), 0, 0)
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses)
    return header + question + answers


class WireTest(unittest.TestCase):
    def test_query_encodes_the_name_as_labels(self):
        q = dnswire.query(0x1234, "x.fresh.svc.cluster.local.")
        self.assertEqual(q[:2], b"\x12\x34")
        self.assertEqual(struct.unpack("!H", q[2:4])[0], 0, "recursion not desired")
        self.assertIn(b"\x01x\x05fresh\x03svc\x07cluster\x05local\x00", q)
        self.assertEqual(q[-4:], struct.pack("!HH", 1, 1))

    def test_answers_are_read_through_compressed_names(self):
        msg = response(7, "x.fresh.svc.cluster.local", ["10.0.0.1", "10.0.0.2"])
        self.assertEqual(dnswire.a_records(msg, 7), ["10.0.0.1", "10.0.0.2"])

    def test_another_id_or_a_question_is_not_our_answer(self):
        self.assertIsNone(dnswire.a_records(response(7, "a.b", ["1.2.3.4"]), 8))
        self.assertIsNone(dnswire.a_records(dnswire.query(7, "a.b"), 7))
        self.assertIsNone(dnswire.a_records(b"\x00\x07", 7))


class AskerTest(unittest.TestCase):
    def test_asks_a_udp_server_and_reads_its_answer(self):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)

        def serve():
            data, peer = server.recvfrom(512)
            qid = struct.unpack("!H", data[:2])[0]
            server.sendto(response(qid, "x.example", ["192.0.2.7"]), peer)

        thread = threading.Thread(target=serve)
        thread.start()
        asker = dnswire.Asker("127.0.0.1", server.getsockname()[1], timeout=2)
        try:
            self.assertEqual(asker.a("x.example"), ["192.0.2.7"])
        finally:
            thread.join()
            asker.close()
            server.close()

    def test_no_answer_is_none(self):
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        asker = dnswire.Asker("127.0.0.1", silent.getsockname()[1], timeout=0.1)
        try:
            self.assertIsNone(asker.a("x.example"))
        finally:
            asker.close()
            silent.close()


if __name__ == "__main__":
    unittest.main()
