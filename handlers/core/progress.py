"""Progress of a rollout or a drain: one line per step; on a terminal, a bar that redraws in place."""


class Progress:
    """One line per step; on a terminal, a bar under them that redraws in place."""

    def __init__(self, stream, total=0, tty=None):
        self.stream, self.total, self.done = stream, total, 0
        self.tty = stream.isatty() if tty is None else tty
        self.bar_shown = False

    def line(self, text):
        if self.bar_shown:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self._bar()
        self.stream.flush()

    def step_done(self):
        self.done += 1
        self._bar()
        self.stream.flush()

    def _bar(self):
        if not self.tty or not self.total:
            return
        width = 30
        n = min(self.done, self.total)
        fill = int(width * n / self.total)
        self.stream.write("\r\033[K[%s%s] %d/%d steps" % ("#" * fill, "." * (width - fill), n, self.total))
        self.bar_shown = True

    def close(self):
        if self.bar_shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.bar_shown = False
