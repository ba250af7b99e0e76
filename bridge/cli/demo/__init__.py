"""`tencent2mqtt demo`: emulator + broker + bridge + a scripted kiosk, with the traffic live."""
