"""Devices: profiles, the adb transport, pushing files, and benchmarking on phones and on the host.

Nothing here imports TensorFlow; adbutils is imported only when a phone is involved, so
`mdeploy devices` and `mdeploy push` start fast.
"""
