"""Stream raw PCM from stdin (a microphone) to a digital human session, 100 ms per message.

    arecord -q -r 16000 -f S16_LE -c 1 -t raw | python3 mic.py SESSION_ID

MQTT_HOST, MQTT_PORT and BASE_TOPIC (defaults localhost, 1883, tencent2mqtt) say where the
bridge listens. End of input sends the empty message that ends the utterance. Needs paho-mqtt
(installed with tencent2mqtt).
"""

import os
import sys

import paho.mqtt.client as mqtt

PIECE = 3200  # 100 ms of 16 kHz, 16-bit, mono

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
client.connect(os.environ.get("MQTT_HOST", "localhost"), int(os.environ.get("MQTT_PORT", "1883")))
client.loop_start()
topic = f"{os.environ.get('BASE_TOPIC', 'tencent2mqtt')}/ivh/{sys.argv[1]}/audio"
while piece := sys.stdin.buffer.read(PIECE):  # blocks until 100 ms are there (or the end)
    client.publish(topic, piece, qos=1)
client.publish(topic, b"", qos=1).wait_for_publish()
client.loop_stop()
client.disconnect()
