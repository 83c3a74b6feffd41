"""Child process of ``bench/cycle_time.py``: the emulated site, served from its own process.

Usage: python bench/_emulator_proc.py SITE.json START_ISO [--period-s 1.0]

Loads the site from a JSON dump (``SiteConfig.model_dump(mode="json")``), starts
:class:`~laterne.simulations.emulator.SiteEmulator` on the site's endpoints, prints ``READY``
and then steps the plant on its own wall clock at speed 1 (plant time = START + seconds since
READY) every ``period_s``, until stdin closes or SIGTERM. Keeping the emulator out of the
benchmark's process means the poll figures are the client's alone, as in the field.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from laterne.models.site import validate_site
from laterne.simulations.emulator import SiteEmulator


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("site", type=Path)
    ap.add_argument("start", type=datetime.fromisoformat)
    ap.add_argument("--period-s", type=float, default=1.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    site = validate_site(json.loads(args.site.read_text()), str(args.site))
    emu = SiteEmulator(site, start=args.start)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await emu.start()
    try:
        print("READY", flush=True)
        t0 = time.monotonic()
        while not stop.is_set():
            await emu.step(args.start + timedelta(seconds=time.monotonic() - t0))
            try:
                await asyncio.wait_for(stop.wait(), args.period_s)
            except TimeoutError:
                pass
    finally:
        await emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
