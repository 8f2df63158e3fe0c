import os
import stat
import tempfile
import tomllib
import unittest

from benchtool import replicas


class ConfigTest(unittest.TestCase):
    ports = replicas.Ports.from_base(17001, 17101, 17201)

    def test_insecure_replica_names_every_member_and_its_own_ports(self):
        c = tomllib.loads(replicas.replica_config(2, "/d/r2/data", self.ports, "/d/token",
                                                  sections={"supervisor": ["enabled = false"]}))
        self.assertEqual(c["id"], 2)
        self.assertEqual((c["api_addr"], c["peer_addr"], c["dns_addr"]),
                         ("127.0.0.1:17002", "127.0.0.1:17102", "127.0.0.1:17202"))
        self.assertEqual([m["id"] for m in c["members"]], [1, 2, 3])
        self.assertEqual(c["members"][2]["peer_addr"], "127.0.0.1:17103")
        self.assertEqual(c["auth"]["bootstrap_token_file"], "/d/token")
        self.assertEqual(c["tls"], {"insecure": True})
        self.assertEqual(c["supervisor"], {"enabled": False})

    def test_tls_replica_names_its_certificate_files(self):
        c = tomllib.loads(replicas.replica_config(1, "/d", self.ports, "/t", tls=("/c/ca.pem", "/c/r.pem", "/c/k.pem"),
                                                  sections={"raft": ["heartbeat_ms = 30"]}))
        self.assertEqual(c["tls"], {"ca_cert": "/c/ca.pem", "cert": "/c/r.pem", "key": "/c/k.pem"})
        self.assertEqual(c["raft"], {"heartbeat_ms": 30})

    def test_api_addrs_is_the_cli_list(self):
        self.assertEqual(self.ports.api_addrs(), "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003")


class TokenTest(unittest.TestCase):
    def test_a_token_is_written_once_private_and_kept(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "sub", "bootstrap.token")
            token = replicas.write_token(path)
            self.assertRegex(token, r"^rvt_[0-9a-f]{12}\.[0-9a-f]{64}$")
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.assertEqual(replicas.write_token(path), token)


class AgentEnvTest(unittest.TestCase):
    def test_only_the_log_setting_of_the_caller_passes(self):
        from unittest import mock
        with mock.patch.dict(os.environ, {"RAFTVISOR_API_ADDR": "x", "RAFTVISOR_CA": "/ca", "HOME": "/h"}):
            env = replicas.agent_env("warn", token="t")
        self.assertNotIn("RAFTVISOR_API_ADDR", env)
        self.assertNotIn("RAFTVISOR_CA", env)
        self.assertEqual((env["RAFTVISOR_LOG"], env["RAFTVISOR_TOKEN"], env["HOME"]), ("warn", "t", "/h"))


if __name__ == "__main__":
    unittest.main()
