"""The driver link: socket, codec, hub, fleet, attestor and dispatcher.

Protobuf stops at its codec: everything past it speaks domain messages.
"""
