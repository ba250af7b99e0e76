"""The MQTT link, the paho session under it, its fast path and the short-lived tool client: the
only package that imports paho."""
