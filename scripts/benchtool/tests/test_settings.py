import os
import unittest
from unittest import mock

from benchtool import settings
from benchtool.console import Failure


class WholeTest(unittest.TestCase):
    def test_unset_or_empty_is_the_default(self):
        with mock.patch.dict(os.environ, {"TRIALS": ""}):
            self.assertEqual(settings.whole("TRIALS", 20), 20)
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(settings.whole("TRIALS", 20), 20)

    def test_a_number_in_range_is_taken(self):
        with mock.patch.dict(os.environ, {"TRIALS": "7"}):
            self.assertEqual(settings.whole("TRIALS", 20, 1, 1000), 7)

    def test_out_of_range_or_not_a_number_fails_with_the_message(self):
        for text in ("0", "1001", "5x", "-3", "1.5"):
            with mock.patch.dict(os.environ, {"TRIALS": text}):
                with self.assertRaisesRegex(Failure, "TRIALS must be 1..1000"):
                    settings.whole("TRIALS", 20, 1, 1000, "TRIALS must be 1..1000")

    def test_words_and_flags(self):
        with mock.patch.dict(os.environ, {"SYSTEMS": "etcd  raftvisor", "KEEP_WORKDIR": "1"}):
            self.assertEqual(settings.words("SYSTEMS", "x"), ["etcd", "raftvisor"])
            self.assertTrue(settings.flag("KEEP_WORKDIR"))
            self.assertFalse(settings.flag("SKIP_BUILD"))


if __name__ == "__main__":
    unittest.main()
