"""Tests of the Tencent Cloud emulator (bridge.emulator), over real sockets."""
