"""Devices: one device state (security status and operating state), the registry, the
export class, the directory operators and researchers read.
"""
