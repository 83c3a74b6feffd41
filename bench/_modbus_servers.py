"""Child process of ``bench/modbus_throughput.py``: pymodbus servers on 127.0.0.1, nothing else.

Usage: python bench/_modbus_servers.py PORT[,PORT...] UNITS REGISTERS

Serves UNITS unit ids (1..UNITS) on every port, each with REGISTERS input registers from address
0 on. Register ``i`` holds ``0x3F00 + i % 64``, so any two adjacent registers read as a finite f32
(0.5 .. 0.75) whatever the alignment. Prints ``READY`` once every port listens, then serves until
stdin closes or SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def _unit(unit_id: int, registers: int) -> SimDevice:
    values = [0x3F00 + i % 64 for i in range(registers)]
    far = [SimData(60000, values=[0], datatype=DataType.REGISTERS)]
    bits = [SimData(60000, values=[False] * 16, datatype=DataType.BITS)]
    inputs = [SimData(0, values=values, datatype=DataType.REGISTERS)]
    return SimDevice(unit_id, simdata=(bits, bits, far, inputs))


async def main() -> None:
    ports = [int(p) for p in sys.argv[1].split(",")]
    units, registers = int(sys.argv[2]), int(sys.argv[3])
    servers = []
    for port in ports:
        server = ModbusTcpServer(
            [_unit(u, registers) for u in range(1, units + 1)], address=("127.0.0.1", port)
        )
        await server.serve_forever(background=True)
        servers.append(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    print("READY", flush=True)
    await stop.wait()
    for server in servers:
        await server.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    asyncio.run(main())
