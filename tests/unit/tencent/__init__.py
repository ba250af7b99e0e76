"""Unit tests of the Tencent API clients."""
