#!/usr/bin/env python3
"""Runs the Python client's test suite (unittest discovery in tests/) against a real `pocket up`.

    python3 clients/python/run_tests.py [--counts FILE] [unittest name patterns ...]

--counts FILE writes "passed=N failed=N skipped=N" for CI (.ci/run adds them to its closing line).
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    counts = None
    if len(argv) >= 2 and argv[0] == "--counts":
        counts, argv = argv[1], argv[2:]
    sys.path.insert(0, os.path.join(HERE, "tests"))
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if argv:
        loader.testNamePatterns = ["*%s*" % a for a in argv]
    suite = loader.discover(os.path.join(HERE, "tests"), top_level_dir=os.path.join(HERE, "tests"))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    # A failed setUpClass is an error of no test that ran, and a test with several failed subtests is one run:
    # neither may be taken off the tests run twice (that printed "-5 passed").
    failed_runs = {getattr(test, "test_case", test).id() for test, _ in result.failures + result.errors
                   if isinstance(test, unittest.TestCase)}
    passed = result.testsRun - len(failed_runs) - len(result.unexpectedSuccesses) - skipped
    if counts:
        with open(counts, "w") as f:
            f.write("passed=%d failed=%d skipped=%d\n" % (passed, failed, skipped))
    print("python client: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
