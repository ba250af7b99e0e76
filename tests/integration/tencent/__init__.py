"""Tencent API clients over real sockets."""
