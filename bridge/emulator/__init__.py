"""The local Tencent Cloud emulator: IVH session manager, command channel and Desk REST.

In-process use (tests, demo, benchmarks)::

    async with Emulator(EmulatorConfig.generate(prepare_delay=0)) as emu:
        emu.base_url, emu.ws_url, emu.info(), emu.state

From the shell: ``tencent2mqtt emulator`` or ``python -m bridge.emulator`` (see cli.py).
"""

from bridge.emulator.config import EmulatorConfig
from bridge.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig"]
