"""The `tencent2mqtt` command line."""
