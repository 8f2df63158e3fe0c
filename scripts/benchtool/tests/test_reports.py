"""The reports and parsers, from recorded results: what the Markdown
tables and goal lines say for known figures."""
import contextlib
import io
import json
import os
import tempfile
import unittest

from benchtool import (bench_dns, bench_failover, bench_kv, bench_manager_loss, bench_memory, bench_node_loss,
                       bench_restart, dns_smoke, docker, kvcluster, loadgen)


def printed(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args)
    return out.getvalue()


def kv_point(system, clients, ok_rps, p99, term=(2, 2)):
    return {"system": system, "clients": clients, "ok_rps": ok_rps, "p50_ms": p99 / 2, "p99_ms": p99,
            "errors": 0, "status_errors": 0, "timeouts": 0, "duration_s": 8.0, "foreign_cpu_pct": 1.0,
            "members_cpu_pct": 60.0, "wrk_cpu_pct": 5.0, "top": [], "term_before": term[0], "term_after": term[1],
            "leader_before": "r1", "leader_after": "r1"}


class KvReportTest(unittest.TestCase):
    def test_ratios_and_goals_at_64_clients(self):
        text = printed(bench_kv.report, [kv_point("etcd", 64, 2000.0, 40.0), kv_point("raftvisor", 64, 3100.0, 30.0),
                                         kv_point("raftvisor-insecure", 64, 4000.0, 20.0)])
        self.assertIn("| clients | etcd writes/s | etcd p50 ms | etcd p99 ms | raftvisor writes/s |", text)
        self.assertIn("| 64 | 2,000 | 20.00 | 40.00 | 3,100 | 15.00 | 30.00 | 1.55 | 0.75 |", text)
        self.assertIn("| 64 | 4,000 | 10.00 | 20.00 | 3,100 | 15.00 | 30.00 | 0.78 | 1.50 | 22 % |", text)
        self.assertIn("raftvisor (TLS) >= 1.5x etcd's writes/s: MET (3,100 vs 2,000 writes/s, ratio 1.55)", text)
        self.assertIn("p99 no worse than etcd's: MET", text)
        self.assertIn("- TLS cost (raftvisor against raftvisor-insecure): 64 clients 22 % of the writes/s", text)

    def test_goals_against_etcd_tls_and_fsyncs_per_write(self):
        tls = kv_point("etcd-tls", 64, 1000.0, 50.0)
        ours = kv_point("raftvisor", 64, 2600.0, 45.0)
        ours["fsyncs"] = bench_kv.fsyncs_per_write({"r1": 10.0, "r2": 5.0, "r3": None},
                                                   {"r1": 2090.0, "r2": 2085.0, "r3": None}, "r1", ours)
        one_tls, one = kv_point("etcd-tls", 1, 500.0, 4.0), kv_point("raftvisor", 1, 600.0, 3.0)
        text = printed(bench_kv.report, [tls, ours, one_tls, one])
        self.assertIn("- goal at 64 clients, raftvisor (TLS) p99 <= etcd-tls's with >= 2.5x its writes/s: MET "
                      "(p99 45.00 vs 50.00 ms; 2,600 vs 1,000 writes/s, ratio 2.60)", text)
        self.assertIn("- goal at 1 client, raftvisor (TLS) p50 <= 0.8x etcd-tls's: MET (1.50 vs 2.00 ms, "
                      "ratio 0.75)", text)
        # 2,600 writes/s for 8 s: 20,800 writes, 2,080 fsyncs on each.
        self.assertIn("- raftvisor 64 clients: 0.100 / 0.100", text)

    def test_metric_sum_adds_every_labelled_sample(self):
        text = b'# TYPE a summary\na_count{file="segment"} 3\na_count{file="meta"} 4\na_count_other 9\na_count 1\n'
        self.assertEqual(kvcluster.metric_sum(text, "a_count"), 8.0)

    def test_histogram_buckets_are_summed_over_matching_series(self):
        text = (b'# TYPE h histogram\n'
                b'h_bucket{route="/v1/kv/{*key}",method="PUT",le="0.005"} 3\n'
                b'h_bucket{route="/v1/kv/{*key}",method="PUT",le="+Inf"} 5\n'
                b'h_bucket{route="/v1/kv/{*key}",method="GET",le="0.005"} 100\n'
                b'h_bucket{route="/v1/kv/{*key}",method="GET",le="+Inf"} 100\n'
                b'h_sum 1\nh_count 105\n')
        self.assertEqual(kvcluster.metric_buckets(text, "h", {"method": "PUT"}), {0.005: 3.0, float("inf"): 5.0})
        self.assertEqual(kvcluster.metric_buckets(text, "h", {})[0.005], 103.0)

    def test_the_time_split_reads_quantile_buckets_between_two_scrapes(self):
        inf = float("inf")
        self.assertEqual(bench_kv.bucket_quantile({0.01: 10, 0.1: 10, inf: 10},
                                                  {0.01: 108, 0.1: 110, inf: 110}, 0.5), 0.01)
        self.assertEqual(bench_kv.bucket_quantile({}, {0.01: 98, 0.1: 100, inf: 100}, 0.99), 0.1)
        self.assertEqual(bench_kv.bucket_quantile({}, {0.01: 1, 0.1: 1, inf: 2}, 0.99), inf)
        self.assertEqual(bench_kv.bucket_quantile({}, {0.01: 99, 0.1: 99, 1.0: 100, inf: 100}, 1.0), 1.0)
        self.assertIsNone(bench_kv.bucket_quantile({0.01: 5, inf: 5}, {0.01: 5, inf: 5}, 0.5))

        def fsyncs(fast, slow):
            return (f'raftvisor_raft_fsync_seconds_bucket{{file="segment",le="0.001"}} {fast}\n'
                    f'raftvisor_raft_fsync_seconds_bucket{{file="segment",le="0.05"}} {fast + slow}\n'
                    f'raftvisor_raft_fsync_seconds_bucket{{file="segment",le="+Inf"}} {fast + slow}\n').encode()
        before = {"r1": fsyncs(0, 0), "r2": fsyncs(0, 0), "r3": None}
        after = {"r1": fsyncs(100, 0), "r2": fsyncs(90, 10), "r3": None}
        rows = bench_kv.time_split(before, after, "r1")
        self.assertEqual(rows, [("segment fsync on the leader", 0.001, 0.001, 0.001),
                                ("segment fsync on the slowest follower", 0.001, 0.05, 0.05)])
        point = kv_point("raftvisor", 64, 2000.0, 40.0)
        point["time_split"] = rows
        text = printed(bench_kv.report, [point])
        self.assertIn("- raftvisor 64 clients, segment fsync on the slowest follower: <= 1 / <= 50 / <= 50", text)
        self.assertEqual(bench_kv.bound_ms(inf), "> 10,000")

    def test_an_election_during_a_run_is_called_out(self):
        text = printed(bench_kv.report, [kv_point("etcd", 1, 500.0, 5.0, term=(2, 3))])
        self.assertIn("- etcd 1 clients: term 2 -> 3, leader r1 -> r1: ELECTION(S) DURING THE RUN", text)

    def test_a_wrk_output_becomes_a_point(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "wrk.txt")
            with open(path, "w") as f:
                f.write("Running 1s test\nBENCH_JSON " + json.dumps({"ok_rps": 10.0, "p99_ms": 1.0}) + "\n")
                f.write("BENCH_FOREIGN " + json.dumps({"foreign_cpu_pct": 12.5, "top": []}) + "\n")
            p = loadgen.point("etcd", 16, 2, path, {"term": 2, "leader": "e1"}, {"term": 2, "leader": "e1"})
        self.assertEqual((p["ok_rps"], p["foreign_cpu_pct"], p["clients"], p["term_after"]), (10.0, 12.5, 16, 2))
        self.assertFalse(loadgen.clean(p, 10))
        self.assertTrue(loadgen.clean(p, 20))


    def test_https_goes_to_a_name_plain_http_stays(self):
        self.assertEqual(loadgen.by_name("https://127.0.0.1:17001"), "https://localhost:17001")
        self.assertEqual(loadgen.by_name("http://127.0.0.1:23791"), "http://127.0.0.1:23791")

    def test_timing_line_names_etcd_defaults_only_when_unset(self):
        self.assertEqual(kvcluster.Timing({}).line(),
                         "- timing: etcd heartbeat 100 ms, election 1000 ms (etcd's defaults); "
                         "raftvisor heartbeat 30 ms, election 100-150 ms")
        self.assertEqual(kvcluster.Timing({"BENCH_ETCD_HEARTBEAT_MS": "50"}).line()[:52],
                         "- timing: etcd heartbeat 50 ms, election 1000 ms; ra")

    def test_security_lines_follow_the_systems(self):
        lines = kvcluster.security_lines(["etcd", "raftvisor-insecure"], wrk=True)
        self.assertEqual(len(lines), 2)
        self.assertTrue(kvcluster.security_lines(["raftvisor"], wrk=True)[-1].startswith("- wrk speaks https"))


class FailoverReportTest(unittest.TestCase):
    def summary(self, system, median, p99, failures=0):
        return {"system": system, "trials": 30, "failures": failures, "median_ms": median, "p99_ms": p99,
                "max_ms": p99, "min_ms": median / 2, "mean_ms": median, "poll_ms": 10, "request_timeout_ms": 100,
                "records": [{"foreign_cpu_pct_during": 3.0}]}

    def test_goals_against_etcd(self):
        text = printed(bench_failover.report, self.summary("etcd", 1000.0, 1200.0), self.summary("raftvisor", 150.0, 290.0))
        self.assertIn("| median | 1,000.0 | 150.0 | 0.15 |", text)
        self.assertIn("| trials (failed) | 30 (0) | 30 (0) |  |", text)
        self.assertIn("- goal median <= 0.15x etcd: MET (ratio 0.15)", text)
        self.assertIn("- goal p99 <= 300 ms over >= 30 trials: MET (p99 290.0 ms over 30 trials)", text)

    def test_a_failed_trial_misses_the_goals(self):
        text = printed(bench_failover.report, self.summary("etcd", 1000.0, 1200.0),
                       self.summary("raftvisor", 150.0, 290.0, failures=1))
        self.assertIn("- goal median <= 0.15x etcd: NOT MET", text)


class MemoryReportTest(unittest.TestCase):
    def test_rss_in_mib_and_the_ratio(self):
        member = {"VmRSS": 20480, "VmHWM": 30720, "RssAnon": 10240, "RssFile": 10240, "disk_kB": 2048}
        load = {"written": 10, "value_size": 256, "seconds": 0.1, "failed": 0, "keys_found": 10}
        results = {"etcd": {"loaded": {"e1": member}, "empty": {"e1": {"VmRSS": 10240}}, "load": load},
                   "raftvisor": {"loaded": {"r1": dict(member, VmRSS=10240)}, "restarted": {"r1": {"VmRSS": 5120}}}}
        text = printed(bench_memory.report, results)
        self.assertIn("| etcd | e1 | 10.0 | 20.0 | 10.0 | 10.0 | 30.0 | n/a | 2.0 |", text)
        self.assertIn("| raftvisor | r1 | n/a | 10.0 | 10.0 | 10.0 | 30.0 | 5.0 | 2.0 |", text)
        self.assertIn("ratio raftvisor/etcd 0.50", text)
        self.assertIn("- etcd: 10 keys of 256 B written in 0.1 s (0 failed), 10 found by a prefix count", text)


class SupervisorReportTest(unittest.TestCase):
    def test_restart_ratio_against_dockerd(self):
        dockerd = [{"ms": v, "same_container": True} for v in (400.0, 500.0)]
        raftvisor = [{"ms": v, "same_container": True} for v in (200.0, 300.0)]
        bare = [{"ms": v, "same_container": True} for v in (220.0, 240.0)]
        text = printed(bench_restart.report, dockerd, raftvisor, bare)
        self.assertIn("| dockerd --restart=always | 2 | 400 ms | 450 ms | 500 ms | 500 ms |", text)
        self.assertIn("| bare docker start (the floor) | 2 | 220 ms | 230 ms | 240 ms | 240 ms |", text)
        self.assertIn("- ratio raftvisor/dockerd: median 0.56x, p99 0.60x, max 0.60x", text)
        self.assertIn("- goal <= 0.8x dockerd (median): met; p99: met", text)
        self.assertIn("- raftvisor against the bare start: median +9 %; goal within 10 %: met", text)

    def test_node_loss_counts_the_placements(self):
        trials = [{"ms": 2500.0, "down_ms": float("nan"), "generations_before": {"0": 1, "1": 1},
                   "generations_after": {"0": 2, "1": 1}}]
        text = printed(bench_node_loss.report, trials, 2)
        self.assertIn("| cut -> all 2 instances running on the other node | 1 | 2500 ms |", text)
        self.assertNotIn("API shows the node down", text)
        self.assertIn("the trials committed 1 new placements where 1 instances had to move", text)
        self.assertIn("- goal p99 <= 3 s over 1 trials: p99 2.50 s met (median 2.50 s, max 2.50 s)", text)

    def test_node_loss_soak_reports_false_downs_and_moves(self):
        quiet = {"seconds": 60, "clients": 64, "burners": 2, "polls": 900, "unanswered": 3, "not_ready": [],
                 "moved": 0,
                 "wrk": {"ok_rps": 4321.0, "errors": 0, "p99_ms": 35.5}}
        text = printed(bench_node_loss.report_soak, quiet)
        self.assertIn("(4,321 acknowledged writes/s, 0 errors, p99 35.5 ms) with 2 busy loops", text)
        self.assertIn("900 node-state polls (3 unanswered within 1 s), 0 showed a node not ready, "
                      "0 instances moved", text)
        self.assertIn("no false \"node down\" under load and a saturated CPU: met", text)
        flapped = dict(quiet, not_ready=[(12.5, "n1", "down")], moved=2)
        text = printed(bench_node_loss.report_soak, flapped)
        self.assertIn("  - at 12.5 s: n1 was down", text)
        self.assertIn("saturated CPU: NOT met", text)
        moved_only = dict(quiet, moved=1)
        self.assertIn("saturated CPU: NOT met", printed(bench_node_loss.report_soak, moved_only))

    def test_docker_times_keep_their_fraction(self):
        self.assertAlmostEqual(docker.parse_time("1970-01-01T00:00:10.5Z"), 10.5)
        self.assertIsNone(docker.parse_time("0001-01-01T00:00:00Z"))


DIG = """
; <<>> DiG 9.18 <<>> @127.0.0.1 -p 38502 svc0.default.svc.cluster.local A
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 1, ADDITIONAL: 1

;; QUESTION SECTION:
;svc0.default.svc.cluster.local.	IN	A

;; ANSWER SECTION:
svc0.default.svc.cluster.local.	5	IN	A	127.0.1.2
svc0.default.svc.cluster.local.	5	IN	A	127.0.1.1

;; AUTHORITY SECTION:
cluster.local.		5	IN	SOA	ns.cluster.local. hostmaster.cluster.local. 1 60 10 3600 5
cluster.local.		5	IN	NS	ns.cluster.local.

;; ADDITIONAL SECTION:
ns.cluster.local.	5	IN	A	127.0.0.1
"""

DNSPERF = """
  Queries sent:         1000
  Queries completed:    998 (99.80%)
  Queries lost:         2 (0.20%)
  Response codes:       NOERROR 998 (100.00%)
  Average packet size:  request 48, response 120
  Queries per second:   99800.5
  Average Latency (s):  0.000890 (min 0.000010, max 0.012000)
  Latency StdDev (s):   0.000500
"""


class DnsTest(unittest.TestCase):
    def test_dig_answers_compare_without_ttls_and_soa(self):
        self.assertEqual(bench_dns.sections(DIG),
                         "1 status NOERROR;2 svc0.default.svc.cluster.local. IN A 127.0.1.1;"
                         "2 svc0.default.svc.cluster.local. IN A 127.0.1.2;"
                         "3~ cluster.local. IN NS ns.cluster.local.;3~ ns.cluster.local. IN A 127.0.0.1;")

    def test_dnsperf_figures(self):
        r = bench_dns.parse_dnsperf(DNSPERF)
        self.assertEqual((r["sent"], r["completed"], r["lost"], r["qps"]), (1000, 998, 2, 99800.5))
        self.assertEqual((r["request_bytes"], r["response_bytes"]), (48, 120))
        self.assertAlmostEqual(r["latency_avg_ms"], 0.89)
        self.assertAlmostEqual(r["latency_max_ms"], 12.0)

    def test_zone_has_the_records_of_examples_dns_zone(self):
        text = bench_dns.zone(services=2, replicas_per_service=3, nodes=2)
        self.assertIn("svc1.default.svc IN A 127.0.1.1\n", text)  # slot 1 of svc1: node (1+1)%2 = 0, port 20000 + 1*3+1
        self.assertIn("_http._tcp.svc1.default.svc IN SRV 0 1 20004 node0.node.cluster.local.\n", text)
        self.assertEqual(text.count(" SRV "), 6)

    def test_queries_are_the_same_every_run(self):
        self.assertEqual(bench_dns.queries(100, 50), bench_dns.queries(100, 50))
        self.assertEqual(len(bench_dns.queries(100, 50).splitlines()), 50)

    def test_freshness_report_goal(self):
        trials = [{"commit_ms": 5.0, "from_send_ms": {"1": 8.0, "2": 9.0}, "from_ack_ms": {"1": 3.0, "2": 4.0}}] * 10
        text = printed(bench_dns.freshness_report, {"trials": trials, "failed": 0, "poll_ms": 1, "leader_api": 37001,
                                                    "leader_after": 37001})
        self.assertIn("| write sent -> both followers answer it | 10 | 9.0 | 9.0 | 9.0 | 9.0 |", text)
        self.assertIn("p99 <= 100 ms: met (p99 9.0 ms counted from sending the write, 4.0 ms from its acknowledgement)",
                      text)

    def test_switch_answers_are_classified_and_a_mix_misses_the_goal(self):
        self.assertEqual(bench_dns.classify(["10.1.0.2", "10.1.0.1"]), "blue")
        self.assertEqual(bench_dns.classify(["10.2.0.1", "10.2.0.2"]), "green")
        self.assertEqual(bench_dns.classify(["10.1.0.1", "10.2.0.2"]), "mix")
        self.assertEqual(bench_dns.classify([]), "empty")
        self.assertEqual(bench_dns.classify(None), "no answer")
        trials = [{"commit_ms": 5.0, "from_send_ms": {"1": 8.0, "2": 9.0}, "from_ack_ms": {"1": 3.0, "2": 4.0}}] * 4
        switch = {"trials": trials, "failed": 0, "poll_ms": 1, "answers": {"blue": 50, "green": 40, "mix": 1}}
        text = printed(bench_dns.freshness_report, {"trials": trials, "failed": 0, "poll_ms": 1, "leader_api": 37001,
                                                    "leader_after": 37001, "switch": switch})
        self.assertIn("| acknowledgement -> both followers answer it | 4 | 4.0 | 4.0 | 4.0 | 4.0 |", text)
        self.assertIn("within 100 ms of the commit: met (p99 9.0 ms", text)
        self.assertIn("never a mix or an empty answer: NOT met (1 such answers)", text)

    def test_smoke_reads_the_status_and_the_a_answers(self):
        self.assertEqual(dns_smoke.status_of(DIG), "NOERROR")
        self.assertEqual(dns_smoke.a_answers(DIG), "127.0.1.1 127.0.1.2")
        self.assertIsNone(dns_smoke.status_of(";; connection timed out; no servers could be reached"))


class ManagerLossReportTest(unittest.TestCase):
    def test_a_trial_that_never_completed_misses_the_replacement_goal(self):
        text = printed(bench_manager_loss.report, [(120.0, 5800.0), (90.0, float("nan"))], 5000)
        self.assertIn("| writes unavailable (longest gap between acknowledged writes) | 2 | 105 | 120 | <= 500 ms |", text)
        self.assertIn("| removal -> 3 voters again (replacement) | 1 | 5800 | 5800 |", text)
        self.assertIn("- goal writes never unavailable > 500 ms when a follower is lost: met (max 120 ms)", text)
        self.assertIn("- goal full replacement <= replace_after + 10 s: NOT met (max 5800 ms)", text)


if __name__ == "__main__":
    unittest.main()
