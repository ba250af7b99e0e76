"""The core: feature protocol, actions, dispatcher, requests, envelopes, topics, ownership.

Nothing here imports the MQTT library, a Tencent client or a feature.
"""
