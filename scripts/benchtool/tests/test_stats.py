import math
import unittest

from benchtool.stats import fmt, percentile, ratio, summary


class PercentileTest(unittest.TestCase):
    def test_nearest_rank_takes_the_value_at_rank_ceil_p_n(self):
        values = list(range(1, 21))  # 20 values: p99 is value 20, p50 value 10
        self.assertEqual(percentile(values, 99), 20)
        self.assertEqual(percentile(values, 50), 10)
        self.assertEqual(percentile(list(range(1, 101)), 99), 99)
        self.assertEqual(percentile([3.0, 1.0, 2.0], 90), 3.0)

    def test_order_of_input_does_not_matter(self):
        self.assertEqual(percentile([5, 1, 4, 2, 3], 40), 2)

    def test_no_values_is_nan(self):
        self.assertTrue(math.isnan(percentile([], 50)))


class SummaryTest(unittest.TestCase):
    def test_nan_values_are_left_out(self):
        s = summary([10.0, float("nan"), 30.0, 20.0])
        self.assertEqual((s["n"], s["min"], s["median"], s["p99"], s["max"]), (3, 10.0, 20.0, 30.0, 30.0))

    def test_nothing_to_summarise_is_none(self):
        self.assertIsNone(summary([float("nan")]))


class FormatTest(unittest.TestCase):
    def test_thousands_and_missing_values(self):
        self.assertEqual(fmt(2152.4, 0), "2,152")
        self.assertEqual(fmt(None), "n/a")
        self.assertEqual(fmt(float("nan")), "n/a")

    def test_ratio_of_missing_or_zero_is_none(self):
        self.assertEqual(ratio(3, 2), 1.5)
        self.assertIsNone(ratio(None, 2))
        self.assertIsNone(ratio(1, 0))


if __name__ == "__main__":
    unittest.main()
