"""`python -m bridge.emulator` runs the emulator command."""

from bridge.emulator.cli import emulator_command

emulator_command()
