import os
import sys
import unittest
from unittest import mock

from benchtool import procs


class ProcessTest(unittest.TestCase):
    def setUp(self):
        self.run = procs.Run("benchtool-test.")

    def tearDown(self):
        self.run.close()

    def sleeper(self):
        """A process whose command line names the run (its mark)."""
        return procs.spawn([sys.executable, "-c", "import time, sys; time.sleep(60)", self.run.dir],
                           self.run.path("log"))

    def test_stop_ends_the_processes_of_the_run(self):
        p = self.sleeper()
        self.assertTrue(procs.wait_until(5, lambda: procs.is_ours(p.pid, self.run.dir), 0.05))
        procs.stop([p], self.run.dir, grace=3)
        self.assertIsNotNone(p.returncode)
        self.assertFalse(procs.is_ours(p.pid, self.run.dir))

    def test_a_process_without_the_mark_is_never_signalled(self):
        p = self.sleeper()
        try:
            procs.wait_until(5, lambda: procs.is_ours(p.pid, self.run.dir), 0.05)
            procs.stop([p], "/no/such/run", grace=0.2)
            self.assertIsNone(p.poll())
        finally:
            procs.stop([p], self.run.dir)

    def test_each_process_leads_its_own_group(self):
        p = self.sleeper()
        # Until it has exec'd, the child still shows this test's command
        # line, and stop() leaves what is not marked alone.
        self.assertTrue(procs.wait_until(5, lambda: procs.is_ours(p.pid, self.run.dir), 0.05))
        try:
            self.assertEqual(os.getpgid(p.pid), p.pid)
        finally:
            procs.stop([p], self.run.dir, group=True)
        self.assertIsNotNone(p.returncode)


class RunTest(unittest.TestCase):
    def test_clean_ups_run_last_first_and_the_directory_goes(self):
        order = []
        with procs.Run("benchtool-test.") as run:
            run.at_exit(lambda: order.append(1))
            run.at_exit(lambda: order.append(2))
            directory = run.dir
        self.assertEqual(order, [2, 1])
        self.assertFalse(os.path.exists(directory))

    def test_a_failing_clean_up_does_not_stop_the_others(self):
        done = []
        run = procs.Run("benchtool-test.")
        run.at_exit(lambda: done.append("first"))
        run.at_exit(lambda: 1 / 0)
        run.close()
        self.assertEqual(done, ["first"])

    def test_keep_workdir_keeps_it(self):
        with mock.patch.dict(os.environ, {"KEEP_WORKDIR": "1"}):
            run = procs.Run("benchtool-test.")
            run.close()
        self.assertTrue(os.path.isdir(run.dir))
        os.rmdir(run.dir)


if __name__ == "__main__":
    unittest.main()
