"""The MQTT link and the short-lived tool client: the only package that imports paho or aiomqtt."""
