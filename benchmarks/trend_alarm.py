"""What the history alarm (quant_guard.store.history.check_alarm) catches on simulated series, with its
default settings (the README's): each run judged against the runs before it, as the nightly does.

Scenarios: steady slopes of +5%, +10%, +12% per run for 40 runs (noiseless, as issue 24 put
them, and with +-3% noise); a flat series that starts a +5%/run slope at run 21; PSNR falling
steadily from 48 to 32.5 dB over 40 runs; flat +-3% noise for 200 runs (several seeds); one spike
(x3) at run 31 of a flat series; a sustained step (x2) from run 21.

It only uses HistoryRecord, HistoryAlarm and check_alarm, so it runs on any checkout of
quant_guard: ``PYTHONPATH=OTHER_CHECKOUT python benchmarks/trend_alarm.py`` gives the numbers of
that checkout's rule (the simulated series come from this checkout's tests/trend_support.py).

Usage: python benchmarks/trend_alarm.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # trend_support: the series

from trend_support import alarmed, geometric, linear, replay  # noqa: E402

from quant_guard.store import history as h  # noqa: E402
from quant_guard.config import limits

FLAT = 0.01  # an LPIPS level


def scenarios(seeds: int) -> list[tuple[str, str, Callable[[int], list[float]], int]]:
    """(name, metric, series of a seed, the run the change starts at (0-based))."""
    out: list[tuple[str, str, Callable[[int], list[float]], int]] = []
    for growth in (0.05, 0.10, 0.12):
        out.append((f"+{growth:.0%}/run x40, no noise", "lpips",
                    lambda s, g=growth: geometric(FLAT, g, 40), 0))
        out.append((f"+{growth:.0%}/run x40, +-3% noise", "lpips",
                    lambda s, g=growth: geometric(FLAT, g, 40, noise=0.03, seed=s), 0))
    out.append(("flat 20, then +5%/run x20, +-3%", "lpips",
                lambda s: geometric(FLAT, 0, 20, noise=0.03, seed=s)
                + [v * 1.05 ** (i + 1) for i, v in enumerate(geometric(FLAT, 0, 20, noise=0.03, seed=s + 100))], 20))
    out.append(("PSNR 48 -> 32.5 dB x40, no noise", "psnr", lambda s: linear(48.0, 32.5, 40), 0))
    out.append(("PSNR 48 -> 32.5 dB x40, +-0.5 dB", "psnr", lambda s: linear(48.0, 32.5, 40, noise=0.5, seed=s), 0))
    out.append(("flat x200, +-3% noise", "lpips", lambda s: geometric(FLAT, 0, 200, noise=0.03, seed=s), -1))
    out.append(("PSNR flat 45 dB x200, +-0.5 dB", "psnr", lambda s: linear(45.0, 45.0, 200, noise=0.5, seed=s), -1))
    out.append(("spike x3 at run 31 of 60, +-3%", "lpips",
                lambda s: [v * 3 if i == 30 else v for i, v in enumerate(geometric(FLAT, 0, 60, noise=0.03, seed=s))],
                30))
    out.append(("step x2 from run 21 of 40, +-3%", "lpips",
                lambda s: [v * 2 if i >= 20 else v for i, v in enumerate(geometric(FLAT, 0, 40, noise=0.03, seed=s))],
                20))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per noisy scenario")
    args = parser.parse_args()
    print(f"quant_guard from {Path(h.__file__).resolve().parent}")
    print(f"settings: {limits.HistoryAlarm(mode=limits.AlarmMode.FAIL)} (metric per scenario)\n")
    print(f"{'scenario':40} {'alarms (per seed)':28} first alarm, runs after the change starts")
    for name, metric, series, onset in scenarios(args.seeds):
        alarm = limits.HistoryAlarm(metric=metric, mode=limits.AlarmMode.FAIL)
        noisy = "+-" in name
        counts, firsts = [], []
        for seed in range(args.seeds if noisy else 1):
            hits = alarmed(replay(series(seed), alarm))
            counts.append(str(len(hits)))
            after = [i - onset + 1 for i in hits if onset >= 0 and i >= onset]
            firsts.append(str(after[0]) if after else "never" if onset >= 0 else "-")
            if "spike" in name or "step" in name:
                firsts[-1] = "runs " + ",".join(str(i + 1) for i in hits) if hits else "never"
        print(f"{name:40} {' '.join(counts):28} {' '.join(firsts)}")


if __name__ == "__main__":
    main()
