# Logger: secret redaction (every registered secret, whatever its length) and exception logging
# with the traceback, scrubbed like every other line.
import unittest

from firmware import log


class LogTest(unittest.TestCase):
    def setUp(self):
        self.lines = []
        self.saved = list(log._secrets)
        log.set_sink(self.lines.append)
        self.errors_before = log.counts[log.ERROR]

    def tearDown(self):
        log.set_sink(None)
        log._secrets[:] = self.saved

    def text(self):
        return "\n".join(self.lines)

    def test_short_secret_is_redacted(self):
        log.add_secret("q7Z")
        log.info("t", "PIN q7Z accepted")
        self.assertNotIn("q7Z", self.text())
        self.assertIn("PIN *** accepted", self.text())

    def test_longer_secret_redacted_before_a_secret_inside_it(self):
        log.add_secret("wxyz")
        log.add_secret("wxyz-9876")
        log.info("t", "key wxyz-9876")
        self.assertEqual(self.lines, ["INFO t: key ***"])

    def test_bytes_secret(self):
        log.add_secret(b"Bytes-Key-1")
        log.warn("t", "sent Bytes-Key-1")
        self.assertNotIn("Bytes-Key-1", self.text())

    def test_exc_logs_the_traceback_without_secrets(self):
        secret = "Hunter2-Secret"
        log.add_secret(secret)

        def failing_login():
            raise ValueError("login with Hunter2-Secret refused")  # secret in the source line too

        try:
            failing_login()
        except ValueError as e:
            log.exc("auth", "join crashed", e)
        text = self.text()
        self.assertNotIn(secret, text)
        self.assertIn("ERROR auth: join crashed: ValueError(login with *** refused)", text)
        self.assertIn("Traceback", text)
        self.assertIn("test_log.py", text)  # where it happened: file, line and function
        self.assertIn("line ", text)
        self.assertIn("failing_login", text)
        self.assertEqual(log.counts[log.ERROR] - self.errors_before, 1)  # one error, many lines

    def test_exc_out_of_memory_logs_a_fixed_line_and_never_raises(self):
        # a supervisor logging its task's crash at a full heap must go on to restart the task
        def sink(line):
            if line.startswith("  ") and line != log._NO_TRACEBACK:
                raise MemoryError("memory allocation failed, allocating 493 bytes")
            self.lines.append(line)

        log.set_sink(sink)
        try:
            raise OSError("disk")
        except OSError as e:
            log.exc("task", "crashed", e)  # must not raise
        self.assertEqual(self.lines, ["ERROR task: crashed: OSError(disk)", log._NO_TRACEBACK])

        def full(line):
            raise MemoryError("nothing fits")

        log.set_sink(full)
        try:
            raise OSError("disk")
        except OSError as e:
            log.exc("task", "crashed", e)  # not even the fixed line: still no exception
