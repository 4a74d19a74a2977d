"""Progress for long loops outside Lightning (the collectors): tqdm on a terminal; in a log, one
line every few percent, as `LineProgress` does for fits (tqdm's redraw frames made a 100k-row
collection write megabytes of `\\r` frames into a study's log)."""

import sys
import time

from tqdm import tqdm


class LogLines:
    """tqdm's `update` / `set_postfix` / `close`, printing a line to stderr (where tqdm
    writes) every `every_percent`."""

    def __init__(self, total: int, desc: str, initial: int = 0, every_percent: int = 5):
        self.total, self.desc, self.n, self.every = total, desc, initial, every_percent
        self.next_mark = (100 * initial // max(total, 1) // every_percent + 1) * every_percent
        self.postfix, self.start = "", time.monotonic()
        print(f"{desc}: {initial}/{total} started", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and 100 * self.n >= self.next_mark * self.total:
            self.next_mark = (100 * self.n // self.total // self.every + 1) * self.every
            print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                  f"{self.postfix}[{time.monotonic() - self.start:.0f} s]", file=sys.stderr,
                  flush=True)

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f"{key}={value} " for key, value in values.items())

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, initial: int = 0, unit: str = "step",
                 disable: bool = False):
    """A tqdm bar when stderr is a terminal (or a silent one if `disable`), else `LogLines`."""
    if disable or sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable)
    return LogLines(total, desc, initial)
